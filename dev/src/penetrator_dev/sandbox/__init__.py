"""penetrator_dev.sandbox: a one-way network of NAT'd intranets with real sshd edge
machines, on one host, for tests, the demo and benchmarks (never the product).

Importing this package is cheap: the relay process (python -m
penetrator_dev.sandbox.relay) imports it too. Use the submodules::

    from penetrator_dev.sandbox.lifecycle import Sandbox, down, exec_in
    from penetrator_dev.sandbox.topology import SandboxSpec, Layout, Fault, build_topology
    from penetrator_dev.sandbox.state import machine_state_dir, install_fails_marker
    from penetrator_dev.sandbox.forward import start_forwarder, stop_forwarder
"""
