"""penetrator_dev.testenv"""
