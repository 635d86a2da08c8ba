"""penetrator.sandbox"""
