"""penetrator.cli"""
