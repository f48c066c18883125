package realtime

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// publishRequest is the body of POST /api/publish.
type publishRequest struct {
	Channel string          `json:"channel"`
	User    string          `json:"user"`
	Data    json.RawMessage `json:"data"`
}

// PublishHandler returns the admin API handler of POST /api/publish. Its
// body is {"channel": "...", "data": <JSON>} or {"user": "...", "data":
// <JSON>}. It answers 200 {"epoch": "...", "seq": N} (seq 0 for users and
// without history), 400 for a bad request, and 503 {"error": ...,
// "delivered": "local"} when the broker is down and the message reached
// this node's connections only.
func (h *Hub) PublishHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method must be POST"})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "reading body: " + err.Error()})
			return
		}
		if len(body) > 1<<20 {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body larger than 1 MiB"})
			return
		}
		var req publishRequest
		d := json.NewDecoder(strings.NewReader(string(body)))
		d.DisallowUnknownFields()
		if err := d.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
			return
		}
		switch {
		case len(req.Data) == 0:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "data is required"})
			return
		case (req.Channel == "") == (req.User == ""):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "exactly one of channel and user is required"})
			return
		}
		var pos Position
		if req.Channel != "" {
			if err := ValidateChannel(req.Channel); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			pos, err = h.Publish(r.Context(), req.Channel, req.Data)
		} else {
			err = h.PublishUser(r.Context(), req.User, req.Data)
		}
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, pos)
		case errors.Is(err, ErrBrokerDown):
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error(), "delivered": "local"})
		default:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
