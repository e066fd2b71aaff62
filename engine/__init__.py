"""HistoGen Lab engine: everything the lab does, without a UI (never imports streamlit)."""

__version__ = "0.1.0"
