"""penetrator.testenv"""
