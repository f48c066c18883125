package gateway

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scaleout/scaleout/balancer"
	"github.com/scaleout/scaleout/httpcache"
)

// adminHandler serves the admin API. Mutating calls need the bearer token
// when one is configured.
func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/upstreams", g.apiUpstreams)
	mux.HandleFunc("POST /api/purge", g.auth(g.apiPurge))
	mux.HandleFunc("GET /api/autoscale", g.apiAutoscale)
	mux.HandleFunc("POST /api/publish", g.auth(g.apiPublish()))
	mux.HandleFunc("GET /api/cdn", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": g.cdnStats.Stats()})
	})
	mux.HandleFunc("GET /api/upstreams/{name}", g.apiUpstream)
	mux.HandleFunc("POST /api/upstreams/{name}/backends", g.auth(g.apiAddBackend))
	mux.HandleFunc("DELETE /api/upstreams/{name}/backends/{id}", g.auth(g.apiRemoveBackend))
	mux.HandleFunc("POST /api/upstreams/{name}/backends/{id}/drain", g.auth(g.apiDrainBackend))
	mux.HandleFunc("POST /api/upstreams/{name}/backends/{id}/undrain", g.auth(g.apiUndrainBackend))
	return mux
}

func (g *Gateway) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		token := g.cfg.Admin.Token
		g.mu.Unlock()
		if token != "" {
			scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="scaleout admin"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// upstreamsStatus is the body of GET /api/upstreams.
type upstreamsStatus struct {
	Upstreams []balancer.PoolStatus `json:"upstreams"`
}

func (g *Gateway) apiUpstreams(w http.ResponseWriter, r *http.Request) {
	pools := g.pools()
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name() < pools[j].Name() })
	out := upstreamsStatus{Upstreams: make([]balancer.PoolStatus, 0, len(pools))}
	for _, p := range pools {
		out.Upstreams = append(out.Upstreams, p.Status())
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) upstream(name string) *upstream {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ups[name]
}

func (g *Gateway) apiUpstream(w http.ResponseWriter, r *http.Request) {
	u := g.upstream(r.PathValue("name"))
	if u == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no upstream named %q", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, u.pool.Status())
}

// addBackendRequest is the body of POST /api/upstreams/{name}/backends.
type addBackendRequest struct {
	URL    string `json:"url"`
	Weight int    `json:"weight"`
}

func (g *Gateway) apiAddBackend(w http.ResponseWriter, r *http.Request) {
	var req addBackendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body must be JSON {\"url\": \"http://host:port\", \"weight\": 1}: "+err.Error())
		return
	}
	if req.Weight < 0 || req.Weight > 1000 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("weight %d is out of range 1..1000", req.Weight))
		return
	}
	b, err := balancer.NewBackend(req.URL, req.Weight)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := g.AddBackend(r.PathValue("name"), b); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": b.ID, "url": b.URL.String(), "weight": b.Weight})
}

// ErrUnknownUpstream is returned for an upstream name not in the configuration.
var ErrUnknownUpstream = errors.New("unknown upstream")

// AddBackend adds b to the named upstream. It stays across reloads until
// removed through RemoveBackend.
func (g *Gateway) AddBackend(upstreamName string, b *balancer.Backend) (*balancer.Backend, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.ups[upstreamName]
	if u == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownUpstream, upstreamName)
	}
	if err := u.pool.Add(b); err != nil {
		return nil, err
	}
	u.dynamic[b.ID] = b.Weight
	return b, nil
}

// RemoveBackend drains a backend and removes it once idle or after the
// upstream's drain timeout.
func (g *Gateway) RemoveBackend(upstreamName, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.ups[upstreamName]
	if u == nil {
		return fmt.Errorf("%w %q", ErrUnknownUpstream, upstreamName)
	}
	if err := u.pool.Remove(id); err != nil {
		return err
	}
	delete(u.dynamic, id)
	return nil
}

// DrainBackend stops new requests to a backend; it stays listed as draining.
func (g *Gateway) DrainBackend(upstreamName, id string) error {
	u := g.upstream(upstreamName)
	if u == nil {
		return fmt.Errorf("%w %q", ErrUnknownUpstream, upstreamName)
	}
	return u.pool.Drain(id)
}

func (g *Gateway) apiUndrainBackend(w http.ResponseWriter, r *http.Request) {
	u := g.upstream(r.PathValue("name"))
	if u == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no upstream named %q", r.PathValue("name")))
		return
	}
	if err := u.pool.Undrain(r.PathValue("id")); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "taking requests again"})
}

func (g *Gateway) apiRemoveBackend(w http.ResponseWriter, r *http.Request) {
	if err := g.RemoveBackend(r.PathValue("name"), r.PathValue("id")); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "draining, removed when idle"})
}

func (g *Gateway) apiDrainBackend(w http.ResponseWriter, r *http.Request) {
	if err := g.DrainBackend(r.PathValue("name"), r.PathValue("id")); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "draining"})
}

// statusOf maps the errors of admin operations to HTTP statuses, in one place.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnknownUpstream), errors.Is(err, balancer.ErrUnknownBackend):
		return http.StatusNotFound
	case errors.Is(err, balancer.ErrDuplicateBackend), errors.Is(err, balancer.ErrNotDraining):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// purgeRequest is the body of POST /api/purge: a URL, tags, or both.
type purgeRequest struct {
	URL  string   `json:"url"`
	Tags []string `json:"tags"`
}

func (g *Gateway) apiPurge(w http.ResponseWriter, r *http.Request) {
	var req purgeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || (req.URL == "" && len(req.Tags) == 0) {
		writeError(w, http.StatusBadRequest, `body must be JSON {"url": "http://host/path"} and/or {"tags": ["t1"]}`)
		return
	}
	hc := g.httpCache.Load()
	if hc == nil {
		writeError(w, http.StatusNotFound, "no route has caching enabled")
		return
	}
	if req.URL != "" {
		u, err := url.Parse(req.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("url %q is not an absolute http(s) URL", req.URL))
			return
		}
		if err := hc.store.PurgeURL(r.Context(), httpcache.Key(u.Scheme, u.Host, u.RequestURI())); err != nil {
			writeError(w, http.StatusBadGateway, "purging: "+err.Error())
			return
		}
	}
	if err := hc.store.PurgeTags(r.Context(), req.Tags...); err != nil {
		writeError(w, http.StatusBadGateway, "purging: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": req})
}
