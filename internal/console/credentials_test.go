package console_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// activeDeployment provisions an Event Streams deployment with a generated
// key through the API and waits until it is active.
func (k *keyline) activeDeployment(name string) created {
	k.t.Helper()
	var dep created
	k.call("POST", "/v2/resource_instances", nil, map[string]any{"name": name, "resource_plan_id": "eventstreams-gen2-standard", "target": "us-south"}, &dep)
	var inst struct {
		State string `json:"state"`
	}
	for tries := 0; inst.State != "active"; tries++ {
		if tries == 2000 {
			k.t.Fatalf("deployment %s is still %q", name, inst.State)
		}
		k.call("GET", "/v2/resource_instances/"+dep.GUID, nil, nil, &inst)
		time.Sleep(10 * time.Millisecond) // polling, not timing: provisioning runs in the background
	}
	return dep
}

// createCredentials creates service credentials through the API.
func (k *keyline) createCredentials(instanceGUID, name string) (guid, apikey string) {
	k.t.Helper()
	var out struct {
		GUID        string `json:"guid"`
		Credentials struct {
			APIKey string `json:"api_key"`
		} `json:"credentials"`
	}
	k.call("POST", "/v2/resource_keys", nil, map[string]any{"name": name, "source": instanceGUID, "role": "Writer"}, &out)
	return out.GUID, out.Credentials.APIKey
}

// credentialsState is the resource key's state as the API reports it.
func (k *keyline) credentialsState(guid string) string {
	k.t.Helper()
	var key struct {
		State string `json:"state"`
	}
	k.call("GET", "/v2/resource_keys/"+url.PathEscape(guid), nil, nil, &key)
	return key.State
}

// tokenStatus is the token endpoint's answer to an API key.
func (k *keyline) tokenStatus(apikey string) int {
	k.t.Helper()
	resp, err := http.PostForm(k.url+"/identity/token", url.Values{"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {apikey}})
	if err != nil {
		k.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDeletingCredentialsInTheConsoleRevokesTheirAPIKey(t *testing.T) {
	k, b := signedInAdmin(t)
	deleteCredentialsInConsole(t, k, b)
}

// deleteCredentialsInConsole creates service credentials on a deployment's
// page, deletes them through the row's Delete button and its confirmation,
// and checks that the API key they carried no longer works.
func deleteCredentialsInConsole(t *testing.T, k *keyline, b *browser) {
	dep := k.activeDeployment("es-creds")
	k.createCredentials(dep.GUID, "billing-app") // stays: only the leaked one goes

	b.open("/console/deployments/"+dep.GUID, "#cred_name")
	b.do("name the credential", chromedp.SendKeys(chromedp.ID("cred_name"), "leaked-app"))
	b.submit("#create-credentials", "#new-credentials")
	var shown struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(b.text("#new-credentials pre")), &shown); err != nil || shown.APIKey == "" {
		t.Fatalf("the new credentials show no API key (%v)", err)
	}
	if got := k.tokenStatus(shown.APIKey); got != http.StatusOK {
		t.Fatalf("the new credentials' API key gets a token with HTTP %d, want 200", got)
	}
	row := `#credentials-list tr[data-name="leaked-app"]`
	guid := get(b, "read the credentials' id", chromedp.Evaluate[string](`document.querySelector(`+jsString(row)+`).dataset.credentials`))

	b.submit(row+` a[data-action="delete-credentials"]`, "#delete-credentials-dialog")
	b.contains("#delete-credentials-dialog", "leaked-app")
	b.contains("#delete-credentials-warning", "stops working")
	b.shot("deployment-credentials-delete", 1280, 390)
	b.submit("#delete-credentials-confirm", ".notice.ok")
	b.contains(".notice.ok", "leaked-app deleted")
	b.contains(".notice.ok", "API key no longer works")
	if n := b.count(row); n != 0 {
		t.Fatal("the deleted credentials are still listed")
	}
	b.contains("#credentials-list", "billing-app")

	if got := k.credentialsState(guid); got != "removed" {
		t.Errorf("the API reports the deleted credentials %q, want removed", got)
	}
	if got := k.tokenStatus(shown.APIKey); got == http.StatusOK {
		t.Error("the deleted credentials' API key still gets a token")
	}
}

func TestCredentialsDeleteIsRefusedWithoutTokenForAnotherDeploymentAndForAReader(t *testing.T) {
	k := startKeyline(t)
	dep := k.activeDeployment("es-mine")
	other := k.activeDeployment("es-other")
	mine, _ := k.createCredentials(dep.GUID, "mine")
	theirs, _ := k.createCredentials(other.GUID, "theirs")
	readerKey := k.createReader(k.account())

	admin := userAgent(t)
	adminCSRF := signIn(t, admin, k.url, keylineAdminKey)
	reader := userAgent(t)
	readerCSRF := signIn(t, reader, k.url, readerKey)
	_, page := fetch(t, reader, "GET", k.url+"/console/deployments/"+dep.GUID, nil)
	if strings.Contains(page, `data-action="delete-credentials"`) {
		t.Error("a reader is shown the Delete credentials button")
	}

	deleteURL := func(dep, key string) string {
		return k.url + "/console/deployments/" + dep + "/credentials/" + key + "/delete"
	}
	cases := []struct {
		name   string
		hc     *http.Client
		url    string
		form   url.Values
		status int
		says   string
	}{
		{"no CSRF token", admin, deleteURL(dep.GUID, mine), url.Values{}, http.StatusForbidden, "security token"},
		{"forged CSRF token", admin, deleteURL(dep.GUID, mine), url.Values{"csrf_token": {"forged"}}, http.StatusForbidden, "security token"},
		{"another deployment's key", admin, deleteURL(dep.GUID, theirs), url.Values{"csrf_token": {adminCSRF}}, http.StatusNotFound, "do not belong to the deployment es-mine"},
		{"a reader", reader, deleteURL(dep.GUID, mine), url.Values{"csrf_token": {readerCSRF}}, http.StatusForbidden, "not authorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := fetch(t, tc.hc, "POST", tc.url, tc.form)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("answered %d, want %d saying %q:\n%s", resp.StatusCode, tc.status, tc.says, body)
			}
		})
	}
	for _, guid := range []string{mine, theirs} {
		if got := k.credentialsState(guid); got != "active" {
			t.Errorf("refused deletes left credentials %s %q, want active", guid, got)
		}
	}

	// The same form with the session's token deletes them.
	resp, body := fetch(t, admin, "POST", deleteURL(dep.GUID, mine), url.Values{"csrf_token": {adminCSRF}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the genuine delete answered %d:\n%s", resp.StatusCode, body)
	}
	if got := k.credentialsState(mine); got != "removed" {
		t.Errorf("after the genuine delete the credentials are %q, want removed", got)
	}
}

func TestCredentialsCanBeViewedAgainByThoseAllowedToCreateThem(t *testing.T) {
	k, b := signedInAdmin(t)
	dep := k.activeDeployment("es-view")
	credGUID, apikey := k.createCredentials(dep.GUID, "viewed-app")
	if apikey == "" {
		t.Fatal("the credentials have no api_key")
	}
	b.open("/console/deployments/"+dep.GUID, "#credentials-list")
	if strings.Contains(b.text("#credentials"), apikey) {
		t.Fatal("the deployment page shows the credentials without being asked")
	}
	b.submit(`#credentials-list tr[data-credentials="`+credGUID+`"] a[data-action="view-credentials"]`, "#viewed-credentials")
	b.contains("#viewed-credentials", apikey)
	var read struct {
		Events []struct {
			Target struct {
				ID string `json:"id"`
			} `json:"target"`
		} `json:"events"`
	}
	k.call("GET", "/v1/audit/events?action=messagehub.key.read", nil, nil, &read)
	if len(read.Events) != 1 || !strings.HasSuffix(read.Events[0].Target.ID, credGUID) {
		t.Fatalf("the viewing was audited as %+v", read.Events)
	}

	// A reader sees no View action, and asking anyway shows no secret.
	reader := newBrowser(t, k.url)
	reader.signIn(k.createReader(k.account()))
	reader.open("/console/deployments/"+dep.GUID, "#credentials-list")
	if n := reader.count(`a[data-action="view-credentials"]`); n != 0 {
		t.Errorf("a reader sees %d View credentials actions", n)
	}
	reader.open("/console/deployments/"+dep.GUID+"?view_credentials="+credGUID, "#viewed-credentials")
	if got := reader.text("#viewed-credentials"); strings.Contains(got, apikey) || !strings.Contains(got, "does not show") {
		t.Fatalf("a reader asking for the credentials sees %q", got)
	}
}
