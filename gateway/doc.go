// Package gateway assembles the scaleout gateway from a config.Config: the
// balancer pools, the fasthttp data plane that routes each request to its
// upstream through the proxy, and the admin API on its own net/http
// listener. It owns hot reload (a new Config replaces the routes and
// updates the pools in place, so backends that stay keep their health and
// connections) and graceful shutdown.
//
// A Gateway's methods are safe to call concurrently; Reload may run while
// requests are being served.
package gateway
