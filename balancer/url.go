package balancer

import (
	"fmt"
	"net/url"
)

// ParseURL parses a backend URL: http or https, with a host and port (the
// port defaults to 80 or 443), and nothing else that would be ignored
// silently (no user info, query or fragment).
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
	if u.Port() == "" {
		if u.Scheme == "https" {
			u.Host += ":443"
		} else {
			u.Host += ":80"
		}
	}
	return u, nil
}
