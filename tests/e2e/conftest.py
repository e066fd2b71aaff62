def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: drives the app in a real browser (Playwright + Debian's chromium)")
