// Package client is a small Go client for Keyline's HTTP APIs, used by the
// CLI and by end-to-end tests. It exchanges an API key for a bearer token
// the way IBM Cloud clients do and decodes every API's error format.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Client calls one Keyline server as one identity.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8080
	APIKey  string
	HTTP    *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// New returns a client for baseURL that authenticates with apikey.
func New(baseURL, apikey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apikey, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// Error is a failed API call, whatever the API's error format.
type Error struct {
	Status  int
	Code    string
	Message string
	Body    []byte
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Token returns a bearer token, fetching a new one shortly before the old expires.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Until(c.expires) > time.Minute {
		return c.token, nil
	}
	if c.APIKey == "" {
		return "", fmt.Errorf("no API key: run `keyline login --apikey KEY` or set KEYLINE_APIKEY")
	}
	form := url.Values{"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {c.APIKey}}
	req, err := http.NewRequestWithContext(ctx, "POST", c.BaseURL+"/identity/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := c.send(req, &out); err != nil {
		return "", err
	}
	c.token = out.AccessToken
	c.expires = time.Now().Add(time.Duration(out.ExpiresIn) * time.Second)
	return c.token, nil
}

// Request describes one API call.
type Request struct {
	Method    string
	Path      string // with its query string
	Header    map[string]string
	Body      any // marshalled as JSON unless it is []byte
	Anonymous bool
}

// Do sends r and decodes a JSON answer into out (when out is not nil).
func (c *Client) Do(ctx context.Context, r Request, out any) error {
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, c.BaseURL+r.Path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range r.Header {
		req.Header.Set(k, v)
	}
	if !r.Anonymous {
		token, err := c.Token(ctx)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return c.send(req, out)
}

// Stream sends r and returns the response body to read as it arrives.
func (c *Client) Stream(ctx context.Context, r Request) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, c.BaseURL+r.Path, nil)
	if err != nil {
		return nil, err
	}
	token, err := c.Token(ctx)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, decodeError(resp.StatusCode, data)
	}
	return resp.Body, nil
}

func (c *Client) send(req *http.Request, out any) error {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return decodeError(resp.StatusCode, data)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	return json.Unmarshal(data, out)
}

// decodeError reads Key Protect, IAM, Resource Controller and platform error bodies.
func decodeError(status int, data []byte) error {
	e := &Error{Status: status, Body: data, Message: http.StatusText(status)}
	var body struct {
		// Key Protect
		Resources []struct {
			ErrorMsg string `json:"errorMsg"`
			Reasons  []struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"reasons"`
		} `json:"resources"`
		// IAM
		ErrorCode    string `json:"errorCode"`
		ErrorMessage string `json:"errorMessage"`
		// Resource Controller and platform
		Message string `json:"message"`
		Errors  []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
		// Event Streams admin
		ErrorCodeNum int `json:"error_code"`
	}
	if json.Unmarshal(data, &body) != nil {
		if s := strings.TrimSpace(string(data)); s != "" && len(s) < 500 {
			e.Message = s
		}
		return e
	}
	switch {
	case len(body.Resources) > 0 && body.Resources[0].ErrorMsg != "":
		e.Message = body.Resources[0].ErrorMsg
		if rs := body.Resources[0].Reasons; len(rs) > 0 {
			e.Code, e.Message = rs[0].Code, rs[0].Message
		}
	case body.ErrorMessage != "":
		e.Code, e.Message = body.ErrorCode, body.ErrorMessage
	case len(body.Errors) > 0:
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
	case body.Message != "":
		e.Message = body.Message
	}
	return e
}

// Path joins path segments, escaping each (CRNs become a%2F...).
func Path(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		if strings.HasPrefix(s, "/") {
			b.WriteString(s)
			continue
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}
