"""penetrator.operator"""
