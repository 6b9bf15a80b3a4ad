package console_test

import (
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/keyline/keyline/internal/controller"
)

// selectByText chooses the option of select #id whose label starts with label.
func (b *browser) selectByText(id, label string) {
	b.t.Helper()
	js := `(() => { const s = document.getElementById(` + jsString(id) + `);
		const o = [...s.options].find(o => o.textContent.trim().startsWith(` + jsString(label) + `));
		if (!o) return false;
		s.value = o.value; s.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`
	if !get(b, "choose "+label+" in "+id, chromedp.Evaluate[bool](js)) {
		b.t.Fatalf("select #%s has no option %q\n%s", id, label, b.bodyText())
	}
}

// signIn signs in through the form.
func (b *browser) signIn(apikey string) {
	b.t.Helper()
	b.open("/console/signin", "#signin-form")
	b.do("sign in",
		chromedp.SendKeys(chromedp.ID("apikey"), apikey),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS(".sidenav")))
}

// submit clicks a submit button and waits for the next page to show then;
// an error the console shows instead fails the test at once.
func (b *browser) submit(button, then string) {
	b.t.Helper()
	// Mark the current page, so that what it already shows is not taken
	// for the answer.
	b.do("mark the page", chromedp.Evaluate[chromedp.Void](`document.body.dataset.stale = "1"`))
	b.do("click "+button, chromedp.Click(chromedp.CSS(button)))
	ready := `!!document.body && !document.body.dataset.stale && !!document.querySelector(` + jsString(then+", #api-error, #error-title") + `)`
	b.poll("submit "+button+" for "+then, func() bool {
		ok, _ := eval[bool](b, ready)
		return ok
	})
	if b.count(then) == 0 {
		b.t.Fatalf("submit %s: the console shows an error instead of %s:\n%s", button, then, b.bodyText())
	}
	// Let chromedp's view of the page catch up with the new document
	// before the next step looks for nodes in it.
	b.do("wait for "+then, chromedp.WaitVisible(chromedp.CSS(then)))
}

// TestConsoleWalksTheSeed follows the seed's UI path in a browser:
// authorization with delegation, a key, a deployment provisioned from the
// dropdowns, a rotation followed live, a force delete through the
// confirmation dialog, and the disabled deployment that keeps its metadata.
func TestConsoleWalksTheSeed(t *testing.T) {
	walkSeed(t)
}

// TestScreenshots regenerates the screenshots of docs/screenshots:
//
//	KEYLINE_SCREENSHOTS=docs/screenshots go test ./internal/console -run TestScreenshots
func TestScreenshots(t *testing.T) {
	if os.Getenv("KEYLINE_SCREENSHOTS") == "" {
		t.Skip("set KEYLINE_SCREENSHOTS to a directory to regenerate the screenshots")
	}
	k, b := walkSeed(t)
	provisionWithoutAuthorization(t, k, b)
	deleteAndRestore(t, k, b)
	deleteCredentialsInConsole(t, k, b)
	manageTopics(t, k, b)
	b.do("sign out", chromedp.Click(chromedp.CSS(".who button")), chromedp.WaitVisible(chromedp.ID("signin-form")))
	b.shot("signin", 1280, 390)
}

func walkSeed(t *testing.T) (*keyline, *browser) {
	k, b := signedInAdmin(t)
	b.open("/console/", "h1")
	b.shot("resources-empty", 1280, 390)

	// Catalog > Key Protect.
	b.open("/console/catalog/", "#catalog-kms")
	b.shot("catalog", 1280, 390)
	b.submit("#catalog-kms", "#kms-form")
	b.do("name the instance", chromedp.SendKeys(chromedp.ID("kms_name"), "byok-kp"))
	b.selectByText("kms_region", "us-south")
	b.shot("catalog-kms", 1280, 390)
	b.submit("#kms-submit", "#create-key-form")
	b.contains(".notice.ok", "byok-kp created")
	kms := created{GUID: get(b, "read the instance id", chromedp.Evaluate[string](`location.pathname.split("/").pop()`))}

	// Manage > Access (IAM) > Authorizations > Create.
	b.open("/console/iam/authorizations", "h1")
	b.shot("authorizations-empty", 1280, 390)
	b.submit("#create-authorization", "#authorization-form")
	b.selectByText("source_service", "Event Streams")
	b.do("choose all source resources", chromedp.Click(chromedp.ID("source_scope_all")))
	b.selectByText("target_service", "Key Protect")
	b.selectByText("target_instance", "byok-kp")
	if !get(b, "read the delegation box", chromedp.Evaluate[bool](`document.getElementById("role_reader").checked`)) {
		b.do("enable Reader", chromedp.Click(chromedp.ID("role_reader")))
	}
	if !get(b, "read the delegation box", chromedp.Evaluate[bool](`document.getElementById("delegate").checked`)) {
		b.do("enable delegation", chromedp.Click(chromedp.ID("delegate")))
	}
	b.shot("authorization-create", 1280, 390)
	b.submit("#authorize", "#authorizations")
	b.contains(".notice.ok", "Authorization created")
	b.contains("#authorizations tbody", "AuthorizationDelegator, Reader")
	b.contains("#authorizations tbody", "User defined")

	// Key Protect: create the disk and backup keys.
	b.open("/console/kms/"+kms.GUID, "#create-key-form")
	for _, name := range []string{"disk-key", "backup-key"} {
		b.do("name the key "+name, chromedp.SendKeys(chromedp.ID("key_name"), name))
		b.submit("#create-key", ".notice.ok")
		b.contains(".notice.ok", name+" created")
	}
	b.contains("#keys", "disk-key")
	b.contains(`#keys tr[data-name="disk-key"]`, "Active")

	// Catalog > Event Streams, choosing the KMS instance and keys from the dropdowns.
	b.open("/console/catalog/event-streams", "#provision-form")
	b.do("name the deployment", chromedp.SendKeys(chromedp.ID("name"), "es-orders"))
	b.selectByText("region", "us-south")
	b.selectByText("kms_instance", "byok-kp")
	b.selectByText("disk_key", "disk-key")
	b.selectByText("backup_key", "backup-key")
	// The backup advice is the one the CLI gives too.
	b.contains("#backup-region-advice", controller.BackupRegionAdvice)
	b.shot("catalog-event-streams", 1280, 390)
	b.submit("#provision-submit", "#state")
	b.contains("h1", "es-orders")
	b.waitText("#state-badge", "active")
	// Provisioning finished within the request: the page says so, and the
	// Tasks panel shows the provisioning with its real state.
	b.contains(".notice.ok", "Deployment es-orders created.")
	if st := b.text(`#tasks-panel li[data-description="Provisioning deployment"] .badge`); st != "completed" {
		t.Fatalf("the provisioning task shows %q, want completed", st)
	}
	b.contains("#encryption", kms.GUID)

	// While unlocked, the deployment's topics show; service credentials are
	// shown once, when created.
	depGUID := get(b, "read the deployment id", chromedp.Evaluate[string](`location.pathname.split("/").pop()`))
	k.call("POST", "/messagehub/"+depGUID+"/admin/topics", nil, map[string]any{"name": "orders", "partitions": 3}, nil)
	b.do("name the credential", chromedp.SendKeys(chromedp.ID("cred_name"), "orders-app"))
	b.submit("#create-credentials", "#new-credentials")
	b.contains("#new-credentials", "orders-app")
	b.contains("#new-credentials", "apikey")
	b.contains("#topics", "orders")
	b.open("/console/deployments/"+depGUID, "#credentials")
	if strings.Contains(b.text("#credentials"), "apikey") {
		t.Fatal("the credentials are shown again after the page that created them")
	}
	b.contains("#credentials", "orders-app")
	b.shot("deployment-active", 1280, 390) // without the one-time credentials

	// Back up now: the backup shows in the list, and restores into a new
	// deployment with the same keys.
	b.submit("#backup-now", ".notice.ok")
	b.contains(".notice.ok", "Backup started")
	b.waitPage("/console/deployments/"+depGUID, "#backups tbody", "completed")
	b.shot("deployment-backups", 1280, 390)
	b.submit(`#backups button[data-action="restore-backup"]`, "#state")
	b.contains("h1", "es-orders-restored")
	restoredURL := get(b, "read the restored deployment's page", chromedp.Evaluate[string](`location.pathname`))
	b.waitPage(restoredURL, "#state-badge", "active")
	b.contains("#encryption", kms.GUID)

	// The deployment created the dependent authorization for its backups.
	b.open("/console/iam/authorizations", "#authorizations")
	b.contains("#authorizations tbody", "Created by es-orders crn:v1:") // named, with its CRN
	b.contains("#authorizations .instance-name", "byok-kp")
	b.contains("#authorizations tbody", "Block Storage for VPC")
	b.shot("authorizations", 1280, 390)

	// Removing the dependent authorization warns that it comes back by itself
	// while the delegator exists.
	b.submit(`#authorizations tr:has(td.kind .mono) a[data-remove]`, "#remove-dialog")
	if kind := get(b, "read the warning kind", chromedp.Evaluate[string](`document.getElementById("remove-warning").dataset.kind`)); kind != "dependent" {
		t.Fatalf("removing the dependent authorization warns as %q", kind)
	}
	b.contains("#remove-warning", "re-created automatically")
	b.shot("authorization-remove", 1280, 390)
	b.do("cancel the removal", chromedp.Click(chromedp.CSS("#remove-dialog a.button")))
	b.do("back on the list", chromedp.WaitVisible(chromedp.ID("authorizations")))
	if n := b.count("#remove-dialog"); n != 0 {
		t.Fatal("the dialog stays open after Cancel")
	}
	// Remove it for real: the deployment re-creates it, as a new policy.
	dependentID := get(b, "read the dependent's id", chromedp.Evaluate[string](`document.querySelector("#authorizations tr:has(td.kind .mono)").dataset.policy`))
	b.submit(`#authorizations tr[data-policy="`+dependentID+`"] a[data-remove]`, "#remove-dialog")
	b.submit("#remove-confirm", ".notice.ok")
	b.contains(".notice.ok", "Authorization removed")
	b.poll("the dependent authorization to be re-created", func() bool {
		b.open("/console/iam/authorizations", "#authorizations")
		again, _ := eval[int](b, `[...document.querySelectorAll("#authorizations tr:has(td.kind .mono)")].filter(r => r.dataset.policy !== `+jsString(dependentID)+`).length`)
		return again == 1 && b.count(`#authorizations tr[data-policy="`+dependentID+`"]`) == 0
	})

	// The key shows the deployment as an associated resource.
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.contains(`#keys tr[data-name="disk-key"] .assoc`, "es-orders")
	b.shot("keys", 1280, 390)

	// Disabling the key locks the deployment, after a confirmation that
	// names it; enabling the key unlocks it.
	b.submit(`#keys tr[data-name="disk-key"] [data-action="disable"]`, "#disable-dialog")
	b.contains("#lock-targets", "es-orders")
	b.shot("key-disable", 1280, 390)
	b.do("cancel the disable", chromedp.Click(chromedp.CSS("#disable-dialog a.button")))
	b.do("back on the keys", chromedp.WaitVisible(chromedp.ID("keys")))
	b.waitPage("/console/", `#deployments tr[data-guid="`+depGUID+`"] .badge`, "active")
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.submit(`#keys tr[data-name="disk-key"] [data-action="disable"]`, "#disable-dialog")
	b.submit("#disable-confirm", ".notice.ok")
	b.waitPage("/console/", `#deployments tr[data-guid="`+depGUID+`"] .badge`, "locked: key disabled")
	b.shot("resources-locked", 1280, 390)
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.submit(`#keys tr[data-name="disk-key"] button[data-action="enable"]`, ".notice.ok")
	b.waitPage("/console/", `#deployments tr[data-guid="`+depGUID+`"] .badge`, "active")
	b.open("/console/kms/"+kms.GUID, "#keys")

	// Rotate in a second tab while the deployment's overview is open in the
	// first, and watch its Tasks panel follow Syncing KMS state to 100%.
	depURL := get(b, "find the deployment link", chromedp.Evaluate[string](`document.querySelector('#keys tr[data-name="disk-key"] .assoc a').getAttribute("href")`))
	b.open(depURL, "#tasks-panel")
	if n := b.count(`#tasks-panel li[data-description="Syncing KMS state"]`); n != 0 {
		t.Fatalf("%d Syncing KMS state tasks before any rotation", n)
	}
	keysTab := b.newTab()
	keysTab.open("/console/kms/"+kms.GUID, "#keys")
	keysTab.submit(`#keys tr[data-name="disk-key"] button[data-action="rotate"]`, ".notice.ok")
	keysTab.contains(".notice.ok", "rotated")
	b.poll("the open overview to show Syncing KMS state completed at 100%", func() bool {
		v, _ := eval[string](b, `(() => { const li = document.querySelector('#tasks-panel li[data-description="Syncing KMS state"]'); return li ? li.dataset.status + " " + li.querySelector(".pct").innerText : ""; })()`)
		return v == "completed 100%"
	})
	b.shot("deployment-tasks", 1280, 390)

	// Force delete the key through the confirmation dialog.
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.submit(`#keys tr[data-name="disk-key"] a[data-action="delete"]`, "#delete-dialog")
	b.contains("#cryptoshred-warning", "cryptoshredding")
	b.contains("#shred-targets", "es-orders")
	b.shot("key-force-delete", 1280, 390)
	b.do("confirm the force", chromedp.Click(chromedp.ID("force")))
	b.submit("#delete-confirm", ".notice.ok")
	b.contains(`#keys tr[data-name="disk-key"]`, "Destroyed")

	// The deployment is disabled; its metadata and security settings remain.
	b.open(depURL, "#state")
	if state := b.text("#state-badge"); state != "disabled: key deleted" {
		t.Fatalf("after the force delete the deployment shows %q", state)
	}
	b.contains("#state-reason", "deleted")
	if reason := b.text("#state-reason"); reason[:1] != strings.ToUpper(reason[:1]) || !strings.HasSuffix(reason, ".") {
		t.Errorf("the state reason reads %q, not as a sentence", reason)
	}
	b.contains("#metadata", "crn:v1:")
	b.contains("#metadata", "Enabled") // bring your own key, still shown
	b.contains("#encryption", "Destroyed")
	b.shot("deployment-disabled", 1280, 390)

	// The Activity Tracker shows the deletion, and the key's own events.
	b.open("/console/activity?action=kms.secrets.delete", "#events")
	b.contains("#events tbody", "kms.secrets.delete")
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.submit(`#keys tr[data-name="disk-key"] a[aria-label="Events of key disk-key"]`, "#events")
	for _, action := range []string{"kms.secrets.rotate", "kms.secrets.delete"} {
		b.contains("#events tbody", action)
	}
	if n := get(b, "count other targets", chromedp.Evaluate[int](`new Set([...document.querySelectorAll('#events tbody td[data-label="Target"] [title]')].map(e => e.title)).size`)); n != 1 {
		t.Errorf("the key's events name %d different targets", n)
	}
	b.open("/console/activity", "#events")
	b.shot("activity", 1280, 390)

	b.open("/console/", "#deployments")
	b.contains("#deployments", "es-orders")
	b.shot("resources", 1280, 390)
	return k, b
}

// postForm posts a form from the page with fetch and returns the status
// and the text of the answer's page.
func (b *browser) postForm(path string, form map[string]string) (int, string) {
	b.t.Helper()
	var fields []string
	for k, v := range form {
		fields = append(fields, "["+jsString(k)+"]: "+jsString(v))
	}
	js := `fetch(` + jsString(path) + `, {method: "POST", credentials: "same-origin", redirect: "manual",
		body: new URLSearchParams({` + strings.Join(fields, ", ") + `})})
		.then(async r => r.status + "\n" + new DOMParser().parseFromString(await r.text(), "text/html").body.innerText)`
	out := get(b, "post "+path, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	status, text, _ := strings.Cut(out, "\n")
	n, _ := strconv.Atoi(status)
	return n, text
}

// sessionCSRF is the CSRF token of the signed-in page (the sign-out form's).
func (b *browser) sessionCSRF() string {
	b.t.Helper()
	return get(b, "read the CSRF token", chromedp.Evaluate[string](`document.querySelector('.who input[name="csrf_token"]').value`))
}

func TestReaderSeesNoMutatingControlsAndGets403WhenPostingAnyway(t *testing.T) {
	k := startKeyline(t)
	account := k.account()
	kms := k.createKMS("shared-kp", "us-south")
	keyID := k.createKey(kms.GUID, "team-key")
	readerKey := k.createReader(account)

	b := newBrowser(t, k.url)
	b.signIn(readerKey)
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.contains("#keys", "team-key")
	for _, sel := range []string{"#create-key-form", `button[data-action]`, `a[data-action="delete"]`} {
		if n := b.count(sel); n != 0 {
			t.Errorf("a reader sees %d %s on the keys page", n, sel)
		}
	}
	b.shot("reader-keys", 1280, 390)
	b.open("/console/iam/authorizations", "h1")
	if n := b.count("#create-authorization"); n != 0 {
		t.Error("a reader sees the Create authorization button")
	}
	for page, sel := range map[string]string{"/console/": "#create-deployment", "/console/catalog/": "#catalog-kms, #catalog-es"} {
		b.open(page, "h1")
		if n := b.count(sel); n != 0 {
			t.Errorf("a reader sees %s on %s", sel, page)
		}
	}

	csrf := b.sessionCSRF()
	cases := []struct{ path string }{
		{"/console/kms/" + kms.GUID + "/keys"},
		{"/console/kms/" + kms.GUID + "/keys/" + keyID + "/rotate"},
		{"/console/kms/" + kms.GUID + "/keys/" + keyID + "/delete"},
	}
	for _, tc := range cases {
		status, text := b.postForm(tc.path, map[string]string{"csrf_token": csrf, "name": "sneaky", "force": "true"})
		if status != 403 || !strings.Contains(text, "not authorized") {
			t.Errorf("a reader's POST %s answered %d:\n%s", tc.path, status, text)
		}
	}
	var keys struct {
		Resources []struct {
			Name  string `json:"name"`
			State int    `json:"state"`
		} `json:"resources"`
	}
	k.call("GET", "/api/v2/keys", map[string]string{"bluemix-instance": kms.GUID}, nil, &keys)
	if len(keys.Resources) != 1 || keys.Resources[0].State != 1 {
		t.Fatalf("the reader's refused posts changed the keys: %+v", keys.Resources)
	}
}

func TestFormWithoutValidCSRFTokenIsRefusedInTheBrowser(t *testing.T) {
	k, kms, b := adminWithKMS(t, "csrf-kp")
	b.open("/console/kms/"+kms.GUID, "#create-key-form")
	for _, token := range []string{"", "forged-token"} {
		status, text := b.postForm("/console/kms/"+kms.GUID+"/keys", map[string]string{"csrf_token": token, "name": "forged"})
		if status != 403 || !strings.Contains(text, "security token") {
			t.Errorf("token %q: answered %d:\n%s", token, status, text)
		}
	}
	status, _ := b.postForm("/console/kms/"+kms.GUID+"/keys", map[string]string{"csrf_token": b.sessionCSRF(), "name": "genuine"})
	if status != 0 && status != 303 && status != 200 {
		t.Fatalf("the genuine form answered %d", status)
	}
	var keys struct {
		Resources []struct {
			Name string `json:"name"`
		} `json:"resources"`
	}
	k.call("GET", "/api/v2/keys", map[string]string{"bluemix-instance": kms.GUID}, nil, &keys)
	if len(keys.Resources) != 1 || keys.Resources[0].Name != "genuine" {
		t.Fatalf("keys after one genuine and two forged forms: %+v", keys.Resources)
	}
}

func TestActivityTrackerFollowsNewEventsLive(t *testing.T) {
	k, kms, b := adminWithKMS(t, "audit-kp")
	b.open("/console/activity?action=kms.secrets.create", "#events")
	if n := b.count(`#events tbody tr`); n != 0 {
		t.Fatalf("%d key creations listed before any key exists", n)
	}
	b.do("follow", chromedp.Click(chromedp.ID("follow")))
	b.waitText("#follow-status", "Following")
	// A key created elsewhere (here, through the API) appears without a reload.
	for _, name := range []string{"first-live-key", "second-live-key"} {
		k.createKey(kms.GUID, name)
	}
	b.do("see the live events", chromedp.WaitVisible(chromedp.CSS(`#events tbody tr[data-action="kms.secrets.create"]:nth-child(2)`)))
	b.contains("#events tbody", "kms.secrets.create")
	if n := b.count(`#events tbody tr:not([data-action="kms.secrets.create"])`); n != 0 {
		t.Errorf("the followed stream ignored the action filter: %d other events", n)
	}
	b.shot("activity-follow", 1280)
	b.do("stop following", chromedp.Click(chromedp.ID("follow")))
	b.waitText("#follow-status", "Stopped")
}

// keyState is the state badge of the key named name on the keys page.
func (b *browser) keyState(name string) string {
	b.t.Helper()
	return b.text(`#keys tr[data-name="` + name + `"] [data-state]`)
}

// waitPage reloads path until sel shows want: the page is server-rendered,
// and what it shows changes as the services react to events.
func (b *browser) waitPage(path, sel, want string) {
	b.t.Helper()
	js := `(() => { const e = document.querySelector(` + jsString(sel) + `); return !!e && e.innerText.includes(` + jsString(want) + `); })()`
	b.poll(path+" showing "+want+" in "+sel, func() bool {
		b.open(path, "h1")
		ok, _ := eval[bool](b, js)
		return ok
	})
}

// adminWithKMS starts Keyline with one Key Protect instance and a browser
// signed in as the administrator.
func adminWithKMS(t *testing.T, kmsName string) (*keyline, created, *browser) {
	k, b := signedInAdmin(t)
	return k, k.createKMS(kmsName, "us-south"), b
}

// signedInAdmin starts Keyline and a browser signed in as the administrator.
func signedInAdmin(t *testing.T) (*keyline, *browser) {
	k := startKeyline(t)
	b := newBrowser(t, k.url)
	b.signIn(keylineAdminKey)
	return k, b
}

func TestKeyLifecycleFromTheKeysPage(t *testing.T) {
	k, kms, b := adminWithKMS(t, "life-kp")
	b.open("/console/kms/"+kms.GUID, "#create-key-form")

	// Import a root key from its material.
	b.do("import a key",
		chromedp.SendKeys(chromedp.ID("key_name"), "imported-key"),
		chromedp.SetValue(chromedp.ID("key_payload"), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="))
	b.submit("#create-key", ".notice.ok")
	b.contains(".notice.ok", "imported")
	b.contains(`#keys tr[data-name="imported-key"]`, "imported")

	// The API audited the call as the console made it: its own path, and
	// the browser's agent as the initiator's.
	var audited struct {
		Events []struct {
			RequestData map[string]any `json:"requestData"`
			Initiator   struct {
				Host struct {
					Agent string `json:"agent"`
				} `json:"host"`
			} `json:"initiator"`
		} `json:"events"`
	}
	k.call("GET", "/v1/audit/events?action=kms.secrets.create", nil, nil, &audited)
	if len(audited.Events) != 1 {
		t.Fatalf("%d kms.secrets.create events, want 1", len(audited.Events))
	}
	if ev := audited.Events[0]; ev.RequestData["requestURI"] != "/api/v2/keys" || !strings.Contains(ev.Initiator.Host.Agent, "Chrome") {
		t.Errorf("the key creation was audited with request %v from agent %q", ev.RequestData, ev.Initiator.Host.Agent)
	}

	row := `#keys tr[data-name="imported-key"] `
	steps := []struct {
		button, flash, state string
	}{
		{`button[data-action="disable"]`, "disabled", "Suspended"},
		{`button[data-action="enable"]`, "enabled", "Active"},
		{`button[data-action="rotate"]`, "rotated", "Active"},
	}
	for _, s := range steps {
		if s.state == "Active" && s.flash == "rotated" {
			// An imported key rotates to new material.
			b.do("give new material", chromedp.SetValue(chromedp.CSS(row+`input[name="payload"]`), "ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A="))
		}
		b.submit(row+s.button, ".notice.ok")
		b.contains(".notice.ok", s.flash)
		if got := b.keyState("imported-key"); got != s.state {
			t.Fatalf("after %s the key is %q, want %q", s.button, got, s.state)
		}
	}
	if got := b.text(row + `td[data-label="Last rotation"]`); got == "Never" {
		t.Error("the rotated key shows no last rotation")
	}
	if got := b.text(row + `td[data-label="Rotation policy"]`); got != "Manual" {
		t.Errorf("a key without a rotation policy shows %q", got)
	}
	keyID := get(b, "read the key id", chromedp.Evaluate[string](`document.querySelector('#keys tr[data-name="imported-key"]').dataset.key`))
	k.call("PUT", "/api/v2/keys/"+keyID+"/policies?policy=rotation", map[string]string{"bluemix-instance": kms.GUID}, map[string]any{
		"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
		"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.policy+json", "rotation": map[string]any{"enabled": true, "interval_month": 3}}},
	}, nil)
	b.open("/console/kms/"+kms.GUID, "#keys")
	if got := b.text(row + `td[data-label="Rotation policy"]`); got != "Every 3 months" {
		t.Errorf("a key rotated every 3 months shows %q", got)
	}

	// The dialog is modal and keyboard friendly: focus starts on Cancel, and
	// Escape closes it without deleting anything.
	b.submit(row+`a[data-action="delete"]`, "#delete-dialog")
	b.poll("the dialog to become modal", func() bool {
		modal, _ := eval[bool](b, `document.getElementById("delete-dialog").matches(":modal")`)
		return modal
	})
	if focused := get(b, "read the focus", chromedp.Evaluate[string](`document.activeElement.textContent.trim()`)); focused != "Cancel" {
		t.Errorf("the delete dialog opens with focus on %q, want Cancel", focused)
	}
	b.do("press Escape", chromedp.KeyEvent(kb.Escape))
	b.poll("the dialog to close", func() bool {
		n, ok := eval[int](b, `document.querySelectorAll("#delete-dialog").length`)
		return ok && n == 0
	})
	if got := b.keyState("imported-key"); got != "Active" {
		t.Fatalf("after Escape the key is %q", got)
	}

	// A key nothing uses deletes without force, and can be restored.
	b.submit(row+`a[data-action="delete"]`, "#delete-dialog")
	if b.count("#force") != 0 {
		t.Error("the dialog asks to force the deletion of a key nothing uses")
	}
	b.submit("#delete-confirm", ".notice.ok")
	if got := b.keyState("imported-key"); got != "Destroyed" {
		t.Fatalf("after delete the key is %q", got)
	}
	k.clock.Advance(time.Minute) // Key Protect restores only 30 s after a deletion
	b.open("/console/kms/"+kms.GUID, "#keys")
	b.submit(row+`button[data-action="restore"]`, ".notice.ok")
	if got := b.keyState("imported-key"); got != "Active" {
		t.Fatalf("after restore the key is %q", got)
	}
}

func TestProvisioningWithoutAuthorizationLinksToTheCreateForm(t *testing.T) {
	k, b := signedInAdmin(t)
	provisionWithoutAuthorization(t, k, b)
}

// provisionWithoutAuthorization tries to provision with a key of a KMS
// instance no authorization covers, and follows the error's link.
func provisionWithoutAuthorization(t *testing.T, k *keyline, b *browser) {
	kms := k.createKMS("lonely-kp", "us-south")
	unauthorizedKey := k.createKey(kms.GUID, "unauthorized-key")
	b.open("/console/catalog/event-streams", "#provision-form")
	b.do("name the deployment", chromedp.SendKeys(chromedp.ID("name"), "es-refused"))
	b.selectByText("kms_instance", "lonely-kp")
	b.selectByText("disk_key", "unauthorized-key")
	b.do("create", chromedp.Click(chromedp.ID("provision-submit")), chromedp.WaitVisible(chromedp.ID("api-error")))
	b.contains("#api-error", "uthoriz")
	b.shot("catalog-missing-authorization", 1280, 390)
	b.submit("#api-error-help", "#authorization-form")
	if got := get(b, "read the preselected target", chromedp.Evaluate[string](`document.getElementById("target_instance").value`)); got != kms.GUID {
		t.Fatalf("the create form preselects target instance %q, want %s", got, kms.GUID)
	}
	// Creating the authorization leads back to the provisioning form, filled
	// in as it was.
	b.submit("#authorize", "#provision-form")
	b.contains(".notice.ok", "Authorization created")
	form := get(b, "read the form", chromedp.Evaluate[[]string](`["name", "kms_instance", "disk_key"].map(id => document.getElementById(id).value)`))
	if len(form) != 3 || form[0] != "es-refused" || form[1] != kms.GUID || !strings.HasSuffix(form[2], ":"+unauthorizedKey) {
		t.Fatalf("back on the provisioning form, it holds %q", form)
	}
	if href := get(b, "read Cancel", chromedp.Evaluate[string](`document.getElementById("provision-cancel").getAttribute("href")`)); href != "/console/catalog/" {
		t.Errorf("the provisioning form's Cancel leads to %q", href)
	}
	if k.hasInstance("es-refused") {
		t.Fatal("a deployment was created without an authorization")
	}
}

func TestDeletedDeploymentWaitsForReclamationAndCanBeRestored(t *testing.T) {
	k, b := signedInAdmin(t)
	deleteAndRestore(t, k, b)
}

// deleteAndRestore deletes a deployment in the console, checks it waits
// for reclamation still registered on its key, and restores it.
func deleteAndRestore(t *testing.T, k *keyline, b *browser) {
	kms := k.createKMS("recl-kp", "us-south")
	_, keyCRN := k.createKeyCRN(kms.GUID, "recl-key")
	k.authorize(k.account(), kms.GUID)
	dep := k.createDeployment("es-recl", keyCRN)

	b.open("/console/deployments/"+dep.GUID, "#state")
	b.waitText("#state-badge", "active")
	b.submit("#delete-deployment", "#delete-deployment-dialog")
	b.contains("#delete-deployment-dialog", "9 days")
	b.submit("#delete-deployment-confirm", "#reclamation")
	b.contains("#state-badge", "pending reclamation")
	b.contains("#reclamation", "needs force")
	b.shot("deployment-reclamation", 1280, 390)

	// Still registered: deleting its key asks for force and names it.
	b.open("/console/kms/"+kms.GUID+"?delete="+strings.TrimPrefix(keyCRN[strings.LastIndex(keyCRN, ":"):], ":"), "#delete-dialog")
	b.contains("#shred-targets", "es-recl")

	b.open("/console/deployments/"+dep.GUID, "#restore-deployment")
	b.submit("#restore-deployment", ".notice.ok")
	b.contains(".notice.ok", "restored")
	b.waitPage("/console/deployments/"+dep.GUID, "#state-badge", "active")
}

func TestChoosingOneSourceInstanceWithoutPickingOneIsRefusedNotWidened(t *testing.T) {
	k := startKeyline(t)
	kms := k.createKMS("narrow-kp", "us-south")
	hc := userAgent(t)
	csrf := signIn(t, hc, k.url, keylineAdminKey)
	resp, body := fetch(t, hc, "POST", k.url+"/console/iam/authorizations", url.Values{"csrf_token": {csrf},
		"source_service": {"messagehub"}, "source_scope": {"instance"}, "source_instance": {""},
		"target_service": {"kms"}, "target_instance": {kms.GUID}, "role_reader": {"1"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="api-error"`) {
		t.Fatalf("answered %d:\n%s", resp.StatusCode, body)
	}
	var policies struct {
		Policies []any `json:"policies"`
	}
	k.call("GET", "/v1/policies?"+url.Values{"account_id": {k.account()}, "type": {"authorization"}}.Encode(), nil, nil, &policies)
	if len(policies.Policies) != 0 {
		t.Fatalf("a refused form created %d authorizations", len(policies.Policies))
	}
}

func TestAKMSInstanceWithoutAKeyIsNotProvisionedWithAGeneratedKey(t *testing.T) {
	k := startKeyline(t)
	kms := k.createKMS("half-kp", "us-south")
	hc := userAgent(t)
	csrf := signIn(t, hc, k.url, keylineAdminKey)
	resp, body := fetch(t, hc, "POST", k.url+"/console/catalog/event-streams", url.Values{"csrf_token": {csrf},
		"name": {"es-half"}, "region": {"us-south"}, "plan": {"eventstreams-gen2-standard"}, "kms_instance": {kms.GUID}, "disk_key": {""}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Choose the disk encryption key") {
		t.Fatalf("answered %d:\n%s", resp.StatusCode, body)
	}
	if k.hasInstance("es-half") {
		t.Fatal("the deployment was provisioned with a generated key")
	}
}
