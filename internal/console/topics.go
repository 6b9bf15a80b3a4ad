package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/keyline/keyline/internal/client"
)

// Topics are managed through the deployment's own admin REST API, as the
// Event Streams console does; the API checks the user's role on the
// deployment (Manager) for every change.

func (c *Console) topicsURL(guid string) string {
	return "/messagehub/" + url.PathEscape(guid) + "/admin/topics"
}

// createTopic creates a topic with its partitions and, when given, its
// retention in hours (Kafka's retention.ms) and cleanup policy.
func (c *Console) createTopic(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid := r.PathValue("guid")
	f := r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	body := map[string]any{"name": name}
	if p := strings.TrimSpace(f.Get("partitions")); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			c.renderError(w, r, s, http.StatusBadRequest, "Bad topic", "Partitions must be a whole number of at least 1.")
			return
		}
		body["partitions"] = n
	}
	var configs []map[string]string
	if h := strings.TrimSpace(f.Get("retention_hours")); h != "" {
		n, err := strconv.ParseInt(h, 10, 64)
		if err != nil || (n < 1 && n != -1) || n > 1<<40 {
			c.renderError(w, r, s, http.StatusBadRequest, "Bad topic", "Retention must be a whole number of hours, or -1 to keep records forever.")
			return
		}
		ms := n * 3600_000
		if n == -1 {
			ms = -1
		}
		configs = append(configs, map[string]string{"name": "retention.ms", "value": strconv.FormatInt(ms, 10)})
	}
	if p := f.Get("cleanup_policy"); p != "" {
		configs = append(configs, map[string]string{"name": "cleanup.policy", "value": p})
	}
	if configs != nil {
		body["configs"] = configs
	}
	if err := api.do(r.Context(), http.MethodPost, c.topicsURL(guid), nil, body, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(guid)+"#topics", "Topic "+name+" created.")
}

// deleteTopic deletes a topic and its records; the dialog that posts here
// said so.
func (c *Console) deleteTopic(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid, name := r.PathValue("guid"), r.PathValue("name")
	if r.PostForm.Get("confirm") != name {
		c.renderAPIError(w, r, s, &client.Error{Status: http.StatusBadRequest,
			Message: "Type the topic's name to confirm its deletion; nothing was deleted."})
		return
	}
	if err := api.do(r.Context(), http.MethodDelete, c.topicsURL(guid)+"/"+url.PathEscape(name), nil, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(guid)+"#topics", "Topic "+name+" deleted with its records.")
}
