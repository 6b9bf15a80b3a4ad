package broker

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"

	"github.com/keyline/keyline/internal/errs"
)

// AdminAuthenticator authenticates an admin REST request and says what the
// caller may do.
type AdminAuthenticator func(*http.Request) (Access, error)

// adminTopic is a topic in the Event Streams admin REST API's shape.
type adminTopic struct {
	Name               string              `json:"name"`
	ID                 string              `json:"id"` // names the topic in Activity Tracker events
	Partitions         int32               `json:"partitions"`
	ReplicationFactor  int32               `json:"replicationFactor"`
	RetentionMs        int64               `json:"retentionMs"`
	CleanupPolicy      string              `json:"cleanupPolicy"`
	Configs            map[string]string   `json:"configs"`
	ReplicaAssignments []adminReplicaGroup `json:"replicaAssignments"`
}

type adminReplicaGroup struct {
	ID      int32 `json:"id"`
	Brokers struct {
		Replicas []int32 `json:"replicas"`
	} `json:"brokers"`
}

type adminCreateTopic struct {
	Name           string `json:"name"`
	Partitions     int32  `json:"partitions"`
	PartitionCount int32  `json:"partition_count"` // the older spelling
	Configs        []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"configs"`
}

type adminError struct {
	ErrorCode int    `json:"error_code"`
	Message   string `json:"message"`
}

// AdminHandler serves the Event Streams admin REST API for topics:
// GET/POST /admin/topics, GET/PATCH/DELETE /admin/topics/{name}, and for
// consumer groups (admin_groups.go). Reading needs Reader access, changes
// need Manager; changes and refused attempts are audited (audit.go).
func (b *Broker) AdminHandler(auth AdminAuthenticator) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/topics", b.adminGuard(auth, Reader, b.adminListTopics))
	mux.HandleFunc("POST /admin/topics", b.adminGuard(auth, Manager, b.adminCreateTopic))
	mux.HandleFunc("GET /admin/topics/{name}", b.adminGuard(auth, Reader, b.adminGetTopic))
	mux.HandleFunc("DELETE /admin/topics/{name}", b.adminGuard(auth, Manager, b.adminDeleteTopic))
	mux.HandleFunc("PATCH /admin/topics/{name}", b.adminGuard(auth, Manager, b.adminUpdateTopic))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, errs.E("broker.Admin", errs.NotExist, "", "no such admin API path"))
	})
	b.registerAdminGroups(mux, auth)
	return b.auditedAdmin(mux)
}

func (b *Broker) adminGuard(auth AdminAuthenticator, need Access, next http.HandlerFunc) http.HandlerFunc {
	const op = "broker.Admin"
	return func(w http.ResponseWriter, r *http.Request) {
		if auth == nil {
			writeAdminError(w, errs.E(op, errs.Unauthenticated, "", "authentication is not configured"))
			return
		}
		access, err := auth(r)
		if err != nil {
			if errs.As(err) == nil {
				err = errs.E(op, errs.Unauthenticated, "", "authentication failed").Because(err)
			}
			writeAdminError(w, err)
			return
		}
		if !access.Allows(need) || access == NoAccess {
			writeAdminError(w, errs.Ef(op, errs.Permission, "", "this operation needs the %s role", need))
			return
		}
		if need == Manager { // every change is the leader's
			next = b.leaderOnlyAdmin(op, next)
		}
		next(w, r)
	}
}

// leaderOnlyAdmin serves next on the leader only; a follower refuses with
// CodeNotLeader.
func (b *Broker) leaderOnlyAdmin(op string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := b.leaderOnly(op); err != nil {
			writeAdminError(w, err)
			return
		}
		next(w, r)
	}
}

func (b *Broker) adminListTopics(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("topic_filter")
	out := []adminTopic{}
	for _, t := range b.Topics(r.Context()) {
		if filter != "" {
			if ok, err := path.Match(filter, t.Name); err != nil || !ok {
				continue
			}
		}
		out = append(out, b.toAdminTopic(t))
	}
	writeAdminJSON(w, http.StatusOK, out)
}

func (b *Broker) adminGetTopic(w http.ResponseWriter, r *http.Request) {
	t, err := b.Topic(r.Context(), r.PathValue("name"))
	if err != nil {
		writeAdminError(w, err)
		return
	}
	writeAdminJSON(w, http.StatusOK, b.toAdminTopic(t))
}

func (b *Broker) adminCreateTopic(w http.ResponseWriter, r *http.Request) {
	const op = "broker.AdminCreateTopic"
	var req adminCreateTopic
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAdminError(w, errs.E(op, errs.Invalid, "", "the request body is not a valid topic: "+jsonProblem(err)))
		return
	}
	partitions := req.Partitions
	if partitions == 0 {
		partitions = req.PartitionCount
	}
	if partitions == 0 {
		partitions = 1
	}
	configs := map[string]string{}
	for _, c := range req.Configs {
		configs[c.Name] = c.Value
	}
	t, err := b.CreateTopic(r.Context(), req.Name, partitions, configs)
	if err != nil {
		writeAdminError(w, err)
		return
	}
	writeAdminJSON(w, http.StatusAccepted, b.toAdminTopic(t))
}

func (b *Broker) adminDeleteTopic(w http.ResponseWriter, r *http.Request) {
	if err := b.DeleteTopic(r.Context(), r.PathValue("name")); err != nil {
		writeAdminError(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (b *Broker) toAdminTopic(t TopicInfo) adminTopic {
	configs := map[string]string{}
	s := newSettings(t.Configs)
	for _, spec := range topicConfigSpecs {
		configs[spec.name] = s.value(spec.name)
	}
	ms := s.retentionMs
	at := adminTopic{Name: t.Name, ID: t.ID, Partitions: t.Partitions, ReplicationFactor: 1, RetentionMs: ms, CleanupPolicy: configs[cfgCleanupPolicy], Configs: configs}
	for i := range t.Partitions {
		var g adminReplicaGroup
		g.ID, g.Brokers.Replicas = i, []int32{b.leaderID()}
		at.ReplicaAssignments = append(at.ReplicaAssignments, g)
	}
	return at
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		return "field " + te.Field + " has the wrong type"
	case errors.Is(err, io.EOF):
		return "the body is empty"
	}
	return err.Error()
}

func writeAdminError(w http.ResponseWriter, err error) {
	e := errs.As(err)
	if e == nil {
		e = errs.Internalf("broker.Admin", err)
	}
	status := e.Kind.Status()
	if aw, ok := w.(*auditWriter); ok {
		aw.reason = e.Msg
	}
	writeAdminJSON(w, status, adminError{ErrorCode: status, Message: e.Msg})
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
