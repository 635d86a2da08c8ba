"""The sandbox's node agent: plays the kubelet for the sandbox's own nodes."""
