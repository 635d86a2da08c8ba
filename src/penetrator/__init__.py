"""penetrator: add and reinstall edge machines behind NAT as Kubernetes nodes, from the cloud."""

__version__ = "0.1.0"
