package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/dinp/dinp/common"
)

// send posts hb to the servers, starting with the last one that answered
// and failing over in order. Any answer other than a 200 with a decodable
// body is an error: the caller then changes nothing.
func (a *Agent) send(ctx context.Context, hb common.Heartbeat) (common.HeartbeatResponse, string, error) {
	body, err := json.Marshal(hb)
	if err != nil {
		return common.HeartbeatResponse{}, "", fmt.Errorf("encode heartbeat: %w", err)
	}
	var errs []error
	for i := range a.servers {
		idx := (a.serverIdx + i) % len(a.servers)
		server := a.servers[idx]
		resp, err := a.post(ctx, server, body)
		if err == nil {
			a.serverIdx = idx
			return resp, server, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return common.HeartbeatResponse{}, "", errors.Join(errs...)
}

// protocolHeader is the heartbeat protocol this agent speaks.
var protocolHeader = strconv.Itoa(common.HeartbeatProtocol)

func (a *Agent) post(ctx context.Context, server string, body []byte) (common.HeartbeatResponse, error) {
	var out common.HeartbeatResponse
	ctx, cancel := context.WithTimeout(ctx, a.interval)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/v1/heartbeat", bytes.NewReader(body))
	if err != nil {
		return out, fmt.Errorf("heartbeat %s: %w", server, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.cfg.ClusterToken)
	req.Header.Set(common.HeaderNodeSecret, a.cfg.NodeSecret)
	req.Header.Set(common.HeaderProtocol, protocolHeader)
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return out, fmt.Errorf("heartbeat %s: %w", server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return out, fmt.Errorf("heartbeat %s: read: %w", server, err)
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("heartbeat %s: status %d: %s", server, resp.StatusCode, bytes.TrimSpace(raw[:min(len(raw), 200)]))
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("heartbeat %s: decode: %w", server, err)
	}
	return out, nil
}
