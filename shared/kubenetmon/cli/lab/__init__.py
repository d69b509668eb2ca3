"""The conntrack lab: a small routed network of Linux network namespaces, with real kernel conntrack.

Product code (``kubenetmon up --demo`` builds one) and the ground truth of the tests, which wrap it in
pytest fixtures. Standard library only; it configures nothing outside the namespaces it creates.
"""
