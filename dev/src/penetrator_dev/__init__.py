"""penetrator-dev: the development tools beside the product (never shipped in its image).

`sandbox` builds the one-way network with sshd machines and the real cluster;
`testenv` runs the Go-built control plane; `cli` is the `penetrator-dev` command.
The product (`penetrator`) never imports this package (import-linter checks it).
"""
