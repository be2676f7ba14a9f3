"""The node's services: thin I/O around the pure state machine `core.node.Node`.

`daemon` owns the process lifetime and the one loop that feeds events to the machine and
carries out its actions; `consensus` the Raft member and proposals, `field` the polling
engine and device writes, `api` the HTTP routes (`views` the read-only bodies), `cloud`
the cloud worker, `bridge` the one crossing from other threads to the loop.
"""
