"""The Streamlit chat app (``manyheads ui``): pages render rooms, rooms hold the logic."""
