package console_test

import (
	"context"
	"testing"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
)

func TestBadImportShowsTheErrorOnTheKeysPageAndKeepsTheForm(t *testing.T) {
	_, kms, b := adminWithKMS(t, "import-kp")
	b.open("/console/kms/"+kms.GUID, "#create-key-form")
	b.do("import bad material",
		chromedp.SendKeys(chromedp.ID("key_name"), "bad-import"),
		chromedp.SetValue(chromedp.ID("key_payload"), "this is not base64!"))
	b.do("add the key", chromedp.Click(chromedp.ID("create-key")), chromedp.WaitVisible(chromedp.ID("api-error")))
	if n := b.count("#create-key-form"); n != 1 {
		t.Fatalf("the refusal shows on a page without the form:\n%s", b.bodyText())
	}
	form := get(b, "read the form", chromedp.Evaluate[[]string](`["key_name", "key_payload"].map(id => document.getElementById(id).value)`))
	if len(form) != 2 || form[0] != "bad-import" || form[1] != "this is not base64!" {
		t.Fatalf("after the refusal the form holds %q", form)
	}
	b.contains("h1", "import-kp")
}

func TestKeysPageShowsEachKeyCRNWithACopyButton(t *testing.T) {
	k, kms, b := adminWithKMS(t, "crn-kp")
	_, keyCRN := k.createKeyCRN(kms.GUID, "crn-key")
	b.do("allow the clipboard", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, name := range []string{"clipboard-read", "clipboard-write"} {
			if _, err := cdp.Call(ctx, tg, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
				Permission: &cdpbrowser.PermissionDescriptor{Name: name}, Setting: cdpbrowser.PermissionSettingGranted}); err != nil {
				return err
			}
		}
		return nil
	}))
	b.open("/console/kms/"+kms.GUID, "#keys")
	row := `#keys tr[data-name="crn-key"] `
	if got := b.text(row + "[data-crn]"); got != keyCRN {
		t.Fatalf("the key row shows CRN %q, want %q", got, keyCRN)
	}
	b.do("copy the CRN", chromedp.Click(chromedp.CSS(row+"button[data-copy]")))
	b.waitText(row+"button[data-copy]", "Copied")
	copied := get(b, "read the clipboard", chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if copied != keyCRN {
		t.Fatalf("the clipboard holds %q, want %q", copied, keyCRN)
	}
}
