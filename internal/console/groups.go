package console

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/client"
)

// A topic's page and its consumer groups' pages read and change them through
// the deployment's admin REST API, as the rest of the deployment's page
// does: the API checks the user's role (Reader to see, Manager to change)
// and writes the Activity Tracker events.

func adminURL(guid string, parts ...string) string {
	return client.Path(append([]string{"messagehub", guid, "admin"}, parts...)...)
}

// topicConfig is one of a topic's configs as its page lists it.
type topicConfig struct{ Name, Value string }

// topicPage shows a topic: partitions, replicas and configs, and to
// Managers a form that changes them.
func (c *Console) topicPage(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	guid, name := r.PathValue("guid"), r.PathValue("name")
	inst, err := c.loadDeployment(ctx, api, guid)
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	var t client.Topic
	if err := api.get(ctx, adminURL(guid, "topics", name), &t); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	var configs []topicConfig
	for _, k := range slices.Sorted(maps.Keys(t.Configs)) {
		configs = append(configs, topicConfig{k, t.Configs[k]})
	}
	data := map[string]any{"Instance": inst, "Topic": t, "Configs": configs,
		"Retention": topic{RetentionMs: t.RetentionMs}.Retention(),
		"CanTopics": c.can(ctx, s, auth.TopicManage, auth.Resource{ServiceName: "messagehub", ServiceInstance: inst.GUID})}
	c.render(w, r, s, http.StatusOK, "topic", view{Title: "Topic " + t.Name, Nav: "resources", Data: data})
}

// updateTopic sends the configs the form changed (an emptied field goes
// back to its default) and a higher partition count, in one PATCH.
func (c *Console) updateTopic(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	guid, name := r.PathValue("guid"), r.PathValue("name")
	var t client.Topic
	if err := api.get(ctx, adminURL(guid, "topics", name), &t); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	body := map[string]any{}
	configs := []map[string]any{}
	for k, old := range t.Configs {
		v, sent := r.PostForm["config."+k]
		if !sent {
			continue
		}
		switch nv := strings.TrimSpace(v[0]); {
		case nv == old:
		case nv == "":
			configs = append(configs, map[string]any{"name": k, "reset_to_default": true})
		default:
			configs = append(configs, map[string]any{"name": k, "value": nv})
		}
	}
	if len(configs) > 0 {
		body["configs"] = configs
	}
	if p := strings.TrimSpace(r.PostForm.Get("partitions")); p != "" && p != strconv.Itoa(int(t.Partitions)) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			c.renderError(w, r, s, http.StatusBadRequest, "Bad topic", "Partitions must be a whole number, more than the topic has now.")
			return
		}
		body["new_total_partition_count"] = n
	}
	to := "/console/deployments/" + url.PathEscape(guid) + "/topics/" + url.PathEscape(name)
	if len(body) == 0 {
		c.redirect(w, r, s, to, "Nothing was changed.")
		return
	}
	if err := api.do(ctx, http.MethodPatch, adminURL(guid, "topics", name), nil, body, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, to, "Topic "+name+" updated.")
}

// groupPage shows a consumer group: its members, and per partition the
// committed offset, the log's end and the lag; Managers may delete an empty
// group after typing its name.
func (c *Console) groupPage(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	guid, name := r.PathValue("guid"), r.PathValue("group")
	inst, err := c.loadDeployment(ctx, api, guid)
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	var g client.Group
	if err := api.get(ctx, adminURL(guid, "consumergroups", name), &g); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	var lag int64
	for _, o := range g.Offsets {
		lag += o.Lag
	}
	can := c.can(ctx, s, auth.TopicManage, auth.Resource{ServiceName: "messagehub", ServiceInstance: inst.GUID})
	data := map[string]any{"Instance": inst, "Group": g, "Lag": lag, "CanDelete": can,
		"ConfirmDelete": can && r.URL.Query().Get("delete") != ""}
	c.render(w, r, s, http.StatusOK, "group", view{Title: "Consumer group " + g.GroupID, Nav: "resources", Data: data})
}

// deleteGroup deletes a consumer group once its name was typed; the API
// refuses a group with members.
func (c *Console) deleteGroup(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid, name := r.PathValue("guid"), r.PathValue("group")
	if r.PostForm.Get("confirm") != name {
		c.renderAPIError(w, r, s, &client.Error{Status: http.StatusBadRequest,
			Message: "Type the group's name to confirm its deletion; nothing was deleted."})
		return
	}
	if err := api.do(r.Context(), http.MethodDelete, adminURL(guid, "consumergroups", name), nil, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(guid)+"#groups", "Consumer group "+name+" deleted with its committed offsets.")
}
