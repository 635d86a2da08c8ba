"""penetrator.api"""
