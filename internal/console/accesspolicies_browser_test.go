package console_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

type accessPolicyDoc struct {
	ID        string `json:"id"`
	Resources []struct {
		Attributes []struct {
			Name     string `json:"name"`
			Value    string `json:"value"`
			Operator string `json:"operator"`
		} `json:"attributes"`
	} `json:"resources"`
	Roles []struct {
		RoleID string `json:"role_id"`
	} `json:"roles"`
}

// accessPoliciesOf lists the access policies whose subject is iamID.
func (k *keyline) accessPoliciesOf(iamID string) []accessPolicyDoc {
	k.t.Helper()
	var list struct {
		Policies []accessPolicyDoc `json:"policies"`
	}
	q := url.Values{"type": {"access"}, "account_id": {k.account()}, "iam_id": {iamID}}
	k.call("GET", "/v1/policies?"+q.Encode(), nil, nil, &list)
	return list.Policies
}

// createServiceID creates a service ID of the administrator's account.
func (k *keyline) createServiceID(name string) (iamID string) {
	k.t.Helper()
	var sid struct {
		IAMID string `json:"iam_id"`
	}
	k.call("POST", "/v1/serviceids", nil, map[string]any{"account_id": k.account(), "name": name}, &sid)
	if sid.IAMID == "" {
		k.t.Fatal("creating a service ID returned no iam_id")
	}
	return sid.IAMID
}

// TestAccessPolicyScopedToTopicsIsCreatedListedAndRemovedInTheConsole
// grants a service ID Writer on topics orders-* through the form, after
// the API refused a cluster policy that names a resource, and removes it
// through the confirmation dialog.
func TestAccessPolicyScopedToTopicsIsCreatedListedAndRemovedInTheConsole(t *testing.T) {
	k, b := signedInAdmin(t)
	sid := k.createServiceID("orders-app")
	kms := k.createKMS("policy-kp", "us-south")

	b.open("/console/", ".sidenav")
	b.submit(`.sidenav a[href="/console/iam/policies"]`, "#create-policy")
	b.contains("h1", "Access policies")
	b.submit("#create-policy", "#policy-form")

	// Key Protect offers its instances and no Event Streams scope; back on
	// Event Streams, a Key Protect instance chosen is dropped.
	b.selectByText("service", "Key Protect")
	b.selectByText("instance", "policy-kp")
	if hidden := get(b, "read the scope", chromedp.Evaluate[bool](`document.getElementById("streams-scope").hidden && document.getElementById("resource_type").disabled`)); !hidden {
		t.Error("the Event Streams resource type is offered for Key Protect")
	}
	b.selectByText("service", "Event Streams")
	if v := get(b, "read the instance", chromedp.Evaluate[string](`document.getElementById("instance").value`)); v != "" {
		t.Errorf("after choosing Event Streams the instance select holds %q", v)
	}
	// Posted anyway, a Key Protect instance on an Event Streams policy is
	// refused rather than granted.
	status, text := b.postForm("/console/iam/policies", map[string]string{"csrf_token": b.sessionCSRF(), "subject": sid,
		"service": "messagehub", "instance": kms.GUID, "role": "crn:v1:bluemix:public:iam::::serviceRole:Reader"})
	if status != 400 || !strings.Contains(text, "not an instance of Event Streams") {
		t.Errorf("an Event Streams policy on a Key Protect instance answered %d:\n%s", status, text)
	}

	b.selectByText("subject", "orders-app")
	b.selectByText("service", "Event Streams")
	b.selectByText("resource_type", "cluster")
	b.do("name a resource and choose Writer",
		chromedp.SendKeys(chromedp.ID("resource"), "orders-*"),
		chromedp.Click(chromedp.ID("role-Writer")))
	b.contains("#resource-hint", "orders-*")
	b.shot("access-policy-form", 1280, 390)

	// A cluster policy names no resource: the API's refusal shows on the
	// form, which keeps what was entered.
	b.do("create the cluster policy", chromedp.Click(chromedp.ID("create-policy-submit")), chromedp.WaitVisible(chromedp.ID("api-error")))
	b.contains("#api-error", "cluster names no resource")
	b.contains("#api-error", "HTTP 400")
	form := get(b, "read the form", chromedp.Evaluate[[]string](`["subject", "service", "resource_type", "resource"].map(id => document.getElementById(id).value).concat([String(document.getElementById("role-Writer").checked)])`))
	if strings.Join(form, " ") != sid+" messagehub cluster orders-* true" {
		t.Fatalf("after the refusal the form holds %q", form)
	}
	if n := len(k.accessPoliciesOf(sid)); n != 0 {
		t.Fatalf("the refused form left %d policies", n)
	}

	// Scoped to topics instead, it is created and listed with its scope.
	b.selectByText("resource_type", "topic")
	b.submit("#create-policy-submit", ".notice.ok")
	b.contains(".notice.ok", "Access policy created")
	policies := k.accessPoliciesOf(sid)
	if len(policies) != 1 {
		t.Fatalf("the API lists %d policies of the service ID", len(policies))
	}
	p := policies[0]
	attrs := map[string]string{}
	for _, a := range p.Resources[0].Attributes {
		attrs[a.Name] = a.Value + " " + a.Operator
	}
	if attrs["serviceName"] != "messagehub stringEquals" || attrs["resourceType"] != "topic stringEquals" ||
		attrs["resource"] != "orders-* stringMatch" || attrs["serviceInstance"] != "" ||
		len(p.Roles) != 1 || !strings.HasSuffix(p.Roles[0].RoleID, ":Writer") {
		t.Fatalf("the API has the policy %+v", p)
	}
	row := `#policies tr[data-policy="` + p.ID + `"] `
	b.contains(row+`td[data-label="Subject"]`, "orders-app")
	b.contains(row+`td[data-label="Subject"]`, "Service ID")
	b.contains(row+`td[data-label="Roles"]`, "Writer")
	b.contains(row+`td[data-label="Service"]`, "Event Streams")
	b.contains(row+`td[data-label="Service"]`, "All instances")
	if got := b.text(row + `td[data-label="Resource type"]`); got != "topic" {
		t.Errorf("the policy's resource type shows %q", got)
	}
	if got := b.text(row + `td[data-label="Resource"]`); got != "orders-*" {
		t.Errorf("the policy's resource shows %q", got)
	}
	b.shot("access-policies", 1280, 390)

	// Removing asks first; cancelling keeps the policy.
	b.submit(row+`a[data-remove]`, "#remove-dialog")
	b.contains("#remove-dialog", "orders-app")
	b.contains("#remove-dialog", "orders-*")
	b.contains("#remove-warning", "re-authorization")
	b.shot("access-policy-remove", 1280, 390)
	b.submit(`#remove-dialog a.button`, "#policies")
	if n := len(k.accessPoliciesOf(sid)); n != 1 {
		t.Fatalf("cancelling the removal left %d policies", n)
	}
	b.submit(row+`a[data-remove]`, "#remove-dialog")
	b.submit("#remove-confirm", ".notice.ok")
	b.contains(".notice.ok", "Access policy removed")
	if n := b.count(row); n != 0 {
		t.Fatal("the removed policy is still listed")
	}
	if n := len(k.accessPoliciesOf(sid)); n != 0 {
		t.Fatalf("after the removal the API lists %d policies of the service ID", n)
	}
}

// TestReaderSeesAccessPoliciesWithoutControlsAndCannotRemoveOne: a user
// without Administrator sees neither Create nor Remove, and a removal
// posted anyway is refused by the API.
func TestReaderSeesAccessPoliciesWithoutControlsAndCannotRemoveOne(t *testing.T) {
	k := startKeyline(t)
	readerKey := k.createReader(k.account())
	b := newBrowser(t, k.url)
	b.signIn(readerKey)
	b.open("/console/iam/policies", "h1")
	// The reader sees its own policies (Reader and Viewer on the account).
	if n := b.count("#policies tbody tr"); n < 2 {
		t.Fatalf("the reader sees %d policies:\n%s", n, b.bodyText())
	}
	for _, sel := range []string{"#create-policy", "a[data-remove]"} {
		if n := b.count(sel); n != 0 {
			t.Errorf("a reader sees %d %s", n, sel)
		}
	}
	id := get(b, "read a policy id", chromedp.Evaluate[string](`document.querySelector("#policies tr[data-policy]").dataset.policy`))
	status, text := b.postForm("/console/iam/policies/"+id+"/delete", map[string]string{"csrf_token": b.sessionCSRF()})
	if status != 403 || !strings.Contains(text, "not authorized") {
		t.Fatalf("a reader's removal answered %d:\n%s", status, text)
	}
	status, _ = b.postForm("/console/iam/policies", map[string]string{"csrf_token": "forged", "subject": "x"})
	if status != 403 {
		t.Fatalf("a create without the CSRF token answered %d", status)
	}
}
