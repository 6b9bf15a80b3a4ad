package kpapi

import (
	"net/http"

	"github.com/keyline/keyline/internal/kms"
)

// policyResource is a key policy in a PUT body.
type policyResource struct {
	Type           string              `json:"type"`
	Rotation       *kms.RotationPolicy `json:"rotation"`
	DualAuthDelete *kms.DualAuthPolicy `json:"dualAuthDelete"`
}

func (a *API) getPolicies(c *call) error {
	ps, err := a.kms.GetKeyPolicies(c.r.Context(), c.guid, c.r.PathValue("id"), c.r.URL.Query().Get("policy"))
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typePolicy, ps, nil)
	return nil
}

func (a *API) putPolicies(c *call) error {
	res, err := decodeCollection[policyResource](c.r, 1, 2)
	if err != nil {
		return err
	}
	in := make([]kms.PolicyInput, len(res))
	for i, p := range res {
		in[i] = kms.PolicyInput{Rotation: p.Rotation, DualAuthDelete: p.DualAuthDelete}
	}
	ps, err := a.kms.SetKeyPolicies(c.r.Context(), c.guid, c.r.PathValue("id"), c.r.URL.Query().Get("policy"), in)
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typePolicy, ps, nil)
	return nil
}

func (a *API) getInstancePolicies(c *call) error {
	ps, err := a.kms.GetInstancePolicies(c.r.Context(), c.guid, c.r.URL.Query().Get("policy"))
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typePolicy, ps, nil)
	return nil
}

// instancePolicyResource is an instance policy in a PUT body.
type instancePolicyResource struct {
	PolicyType string                 `json:"policy_type"`
	PolicyData kms.InstancePolicyData `json:"policy_data"`
}

func (a *API) putInstancePolicies(c *call) error {
	res, err := decodeCollection[instancePolicyResource](c.r, 1, 6)
	if err != nil {
		return err
	}
	in := make([]kms.InstancePolicy, len(res))
	for i, p := range res {
		in[i] = kms.InstancePolicy{PolicyType: p.PolicyType, PolicyData: p.PolicyData}
	}
	if err := a.kms.SetInstancePolicies(c.r.Context(), c.guid, c.r.URL.Query().Get("policy"), in); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) allowedIPPort(c *call) error {
	port, err := a.kms.AllowedIPPort(c.r.Context(), c.guid)
	if err != nil {
		return err
	}
	type portResource struct {
		Port int `json:"private_endpoint_port"`
	}
	var items []portResource
	if port != 0 {
		items = append(items, portResource{port})
	}
	writeCollection(c.w, http.StatusOK, typeAllowedIP, items, nil)
	return nil
}
