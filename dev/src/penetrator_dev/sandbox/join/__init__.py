"""The sandbox's `edgeadm`: joins an edge machine at the API level of kubeadm
join (token discovery with CA pin, TLS bootstrap through a CSR signed by the
real controller manager, Node + Lease), and one heartbeat service per
intranet that keeps every joined machine Ready.

    python -m penetrator_dev.sandbox.join join|reset ...     (program.py)
    python -m penetrator_dev.sandbox.join.heartbeat ...      (heartbeat.py)
    build_join_package(dest)                             (package.py)
"""
