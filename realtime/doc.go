// Package realtime is the WebSocket hub of a scaleout gateway node: it holds
// client WebSocket connections, authenticates them with HMAC-signed tokens,
// subscribes them to channels, and delivers every message published on a
// channel or to a user to each connection it is meant for, whichever node
// of the cluster holds that connection.
//
// Nodes exchange messages through a Broker: MemoryBroker (one process, the
// default and the test double), RedisBroker (Redis pub/sub, with per-channel
// sequence numbers and a bounded history kept in Redis) and NATSBroker (NATS
// core, with the sequence numbers and history in Redis when given one).
// Presence (which users are online in a channel, and with how many
// connections) is kept in Redis with heartbeats and TTLs when the Hub is
// given a Redis client, so a crashed node's users vanish within the TTL.
//
// App instances publish through the gateway's admin API (POST /api/publish,
// served by Hub.PublishHandler), or directly: a Hub built on the same broker
// as the gateway nodes can Publish and PublishUser without serving any
// connection (Run is not needed for publishing).
//
// Mounting: Hub.ServeFastHTTP is the WebSocket endpoint on a fasthttp
// server. With the server's KeepHijackedConns set, also set
// Config.ServerKeepsHijackedConns: an idle connection then costs about 9 KB
// instead of 16 KB.
//
// The wire protocol between a client and the hub is a small JSON protocol
// described in PROTOCOL.md. Client is a Go implementation of it for app code
// and tests.
//
// Concurrency: every method of Hub, Client and the brokers is safe to call
// from several goroutines. Each connection has a bounded send queue; a
// client that cannot keep up is disconnected (CloseSlowClient) and never
// slows delivery to the others.
package realtime
