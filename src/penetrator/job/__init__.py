"""penetrator.job"""
