"""The fault lab: simulated gateways in network namespaces over a wireguard-go mesh, a seeded
fault schedule, a Jepsen-style workload and checker. Root only; used by `meshems lab`."""
