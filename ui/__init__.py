"""Streamlit-side helpers shared by the pages (DESIGN "Layout"): figures.py holds every plotly figure.

No engine logic here; pages call the engine and hand its results to these helpers.
"""
