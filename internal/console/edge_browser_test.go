package console_test

import (
	"testing"

	"github.com/chromedp/chromedp"
)

func TestBrowserSignInShowsTheConsoleAndRefusesABadKey(t *testing.T) {
	srv, _ := startEdge(t, false)
	b := newBrowser(t, srv.URL)

	b.open("/console/", "#signin-form")
	b.do("sign in with a wrong key",
		chromedp.SendKeys(chromedp.ID("apikey"), "not-a-key"),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.ID("signin-error")))
	b.contains("#signin-error", "not valid")

	b.do("sign in",
		chromedp.SendKeys(chromedp.ID("apikey"), edgeAdminKey),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS(".sidenav")))
	b.contains("h1", "Resource list")
	b.contains(".who .user", "admin@example.com")
}
