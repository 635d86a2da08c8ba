"""penetrator.plan"""
