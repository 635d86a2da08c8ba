"""penetrator.k8s"""
