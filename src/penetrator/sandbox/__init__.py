"""penetrator.sandbox: a one-way network of NAT'd intranets with real sshd edge
machines, on one host, for tests, the demo and benchmarks (never the product).

Importing this package is cheap: the relay process (python -m
penetrator.sandbox.relay) imports it too. Use the submodules::

    from penetrator.sandbox.lifecycle import Sandbox, down, exec_in
    from penetrator.sandbox.topology import SandboxSpec, Layout, Fault, build_topology
    from penetrator.sandbox.state import machine_state_dir, install_fails_marker
    from penetrator.sandbox.forward import start_forwarder, stop_forwarder
"""
