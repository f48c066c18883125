package balancer

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// ParseURL parses a backend URL: http or https, with a host and port (the
// port defaults to 80 or 443), and nothing else that would be ignored
// silently (no user info, query or fragment). The URL's Host is always
// host:port, which is the backend's ID.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("backend url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("backend url %q: scheme must be http or https", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("backend url %q: no host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("backend url %q: user info, query and fragment are not allowed", raw)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("backend url %q: port %q: must be 1-65535", raw, port)
	}
	u.Host = net.JoinHostPort(u.Hostname(), port)
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("backend url %q: host %q: %w", raw, u.Hostname(), err)
	}
	return u, nil
}
