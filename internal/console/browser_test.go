package console_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// stepTimeout bounds every browser step: chromedp has no default timeout,
// and a selector that never matches would otherwise hang the test.
const stepTimeout = 20 * time.Second

const chromium = "/usr/bin/chromium"

// browser is one headless Chromium driven over the DevTools pipe.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
	mu    *sync.Mutex // guards out, which Chromium's output is written to
	out   *bytes.Buffer
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// screenshotDir is $KEYLINE_SCREENSHOTS, or a temporary directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("KEYLINE_SCREENSHOTS"); d != "" {
		// go test runs in the package directory; a relative path means the
		// module root, where the documented command is typed.
		if !filepath.IsAbs(d) {
			d = filepath.Join(moduleRoot(t), d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// newBrowser starts Chromium for one test; base is the server's URL.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("no Chromium at " + chromium + ": apt-get install -y chromium")
	}
	b := &browser{t: t, base: base, shots: screenshotDir(t), mu: &sync.Mutex{}, out: &bytes.Buffer{}}
	profile := t.TempDir()
	// Chromium's singleton socket lives under TMPDIR and its path must stay
	// short, shorter than t.TempDir() names are.
	tmp, err := os.MkdirTemp("", "kl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(profile),
		chromedp.Env("TMPDIR=" + tmp), chromedp.CombinedOutput(lockedBuffer{mu: b.mu, buf: b.out}),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// Start the browser without a deadline (a deadline here would kill it
	// when it fires), but do not wait for a hung start forever.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			cancel()
			cancelAlloc()
			t.Fatalf("starting Chromium: %v\n%s", err, b.output())
		}
	case <-time.After(stepTimeout):
		cancel()
		cancelAlloc()
		t.Fatalf("Chromium did not start within %v\n%s", stepTimeout, b.output())
	}
	b.ctx = ctx
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		chromedp.Cancel(cctx)
		cancel()
		cancelAlloc()
	})
	b.do("set the laptop viewport", chromedp.EmulateViewport(1280, 900))
	return b
}

// newTab opens a second tab of the same browser, sharing its cookies.
func (b *browser) newTab() *browser {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	// As with the first tab, the first run must not carry a deadline: the
	// tab would close when it fires.
	opened := make(chan error, 1)
	go func() { opened <- chromedp.Do(ctx) }()
	select {
	case err := <-opened:
		if err != nil {
			b.t.Fatalf("opening a tab: %v", err)
		}
	case <-time.After(stepTimeout):
		b.t.Fatal("a new tab did not open")
	}
	tab := &browser{t: b.t, ctx: ctx, base: b.base, shots: b.shots, mu: b.mu, out: b.out}
	tab.do("set the viewport", chromedp.EmulateViewport(1280, 900))
	return tab
}

func (b *browser) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// do runs steps with the step timeout and fails the test on error. Right
// after a page replaced itself (a form posted), chromedp may still resolve
// a selector to a node of the old document, which Chromium then refuses
// before acting on it ("Could not find node with given id"); such steps
// are run again once chromedp has the new document.
func (b *browser) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	for {
		err := chromedp.Do(ctx, actions...)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Could not find node with given id") || ctx.Err() != nil {
			b.t.Fatalf("%s: %v (page %s)\n%s", step, err, b.location(), b.bodyText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get runs one valued action with the step timeout.
func get[T any](b *browser, step string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v (page %s)", step, err, b.location())
	}
	return v
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

func (b *browser) bodyText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
	return s
}

// open navigates to a console path and waits until sel is visible.
func (b *browser) open(path, sel string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// poll retries try until it reports success or the step timeout passes.
// Evaluations fail while a page is being replaced, so a failed try is
// simply tried again.
func (b *browser) poll(what string, try func() bool) {
	b.t.Helper()
	for deadline := time.Now().Add(stepTimeout); !try(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: timed out (page %s)\n%s", what, b.location(), b.bodyText())
		}
	}
}

// eval evaluates js once, with a short timeout; ok is false on any error.
func eval[T any](b *browser, js string) (v T, ok bool) {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	return v, err == nil
}

// text is the visible text of the first element matching sel, waiting
// for it to exist. It reads through JavaScript rather than DevTools node
// ids, which go stale when the page has just been replaced.
func (b *browser) text(sel string) string {
	b.t.Helper()
	js := `(() => { const e = document.querySelector(` + jsString(sel) + `); return e ? [true, e.innerText.trim()] : [false, ""]; })()`
	var out string
	b.poll("read "+sel, func() bool {
		v, ok := eval[[]any](b, js)
		if !ok || len(v) != 2 || v[0] != true {
			return false
		}
		out, _ = v[1].(string)
		return true
	})
	return out
}

// count is how many elements match sel right now.
func (b *browser) count(sel string) int {
	b.t.Helper()
	return get(b, "count "+sel, chromedp.Evaluate[int](`document.querySelectorAll(`+jsString(sel)+`).length`))
}

// waitText waits until the element matching sel contains want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	js := `(() => { const e = document.querySelector(` + jsString(sel) + `); return !!e && e.innerText.includes(` + jsString(want) + `); })()`
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %q in %s: %v (page %s)\n%s", want, sel, err, b.location(), b.bodyText())
	}
}

// contains asserts that the element matching sel shows want.
func (b *browser) contains(sel, want string) {
	b.t.Helper()
	if got := b.text(sel); !strings.Contains(got, want) {
		b.t.Fatalf("%s shows %q, want it to contain %q", sel, got, want)
	}
}

// shot saves a full-page PNG named name-<width>.png at each width.
func (b *browser) shot(name string, widths ...int) {
	b.t.Helper()
	if len(widths) == 0 {
		widths = []int{1280}
	}
	for _, w := range widths {
		b.do("resize to "+name, chromedp.EmulateViewport(int64(w), 900))
		// At every width the page fits: nothing makes it scroll sideways.
		if wide := get(b, "measure "+name, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); wide > w {
			b.t.Errorf("%s is %d px wide in a %d px window", name, wide, w)
		}
		// No table is cut: neither its scroll container nor any cell has
		// content wider than the room it is given.
		for _, clipped := range get(b, "measure the tables of "+name, chromedp.Evaluate[[]string](clippedTablesJS+" .concat("+truncatedSelectsJS+")")) {
			b.t.Errorf("%s at %d px: %s", name, w, clipped)
		}
		png := get(b, "screenshot "+name, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(b.shots, name+"-"+strconv.Itoa(w)+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do("restore the viewport", chromedp.EmulateViewport(1280, 900))
}

// clippedTablesJS lists every table, and every visible cell, whose content
// overflows horizontally: a table scrolling sideways inside its wrapper, or
// a cell cutting its text or buttons. It answers a list of descriptions.
const clippedTablesJS = `(() => {
	const out = [];
	const name = (t) => t.id || (t.closest("section[id]") || {}).id || "a table";
	document.querySelectorAll("table").forEach((t) => {
		const wrap = t.parentElement;
		if (wrap.scrollWidth > wrap.clientWidth + 1) out.push(name(t) + " is " + wrap.scrollWidth + " px wide in " + wrap.clientWidth + " px");
		const box = wrap.getBoundingClientRect();
		t.querySelectorAll("th, td").forEach((c) => {
			if (!c.offsetParent) return;
			const r = c.getBoundingClientRect();
			const label = name(t) + " cell " + JSON.stringify(c.innerText.trim().slice(0, 40));
			if (c.scrollWidth > c.clientWidth + 1) out.push(label + " overflows its cell (" + c.scrollWidth + " > " + c.clientWidth + ")");
			else if (r.right > box.right + 1 || r.left < box.left - 1) out.push(label + " lies outside the table's box");
		});
	});
	return out;
})()`

// truncatedSelectsJS lists the visible selects whose chosen option's text
// is wider than the select shows (its padding and arrow taken away).
const truncatedSelectsJS = `(() => {
	const out = [];
	const ctx = document.createElement("canvas").getContext("2d");
	document.querySelectorAll("select").forEach((s) => {
		const o = s.selectedOptions[0];
		if (!s.offsetParent || !o) return;
		const st = getComputedStyle(s);
		ctx.font = st.font;
		const room = s.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight) - 20;
		const need = ctx.measureText(o.textContent.trim()).width;
		if (need > room) out.push("select #" + s.id + " cuts " + JSON.stringify(o.textContent.trim()) + " (" + Math.round(need) + " > " + Math.round(room) + " px)");
	});
	return out;
})()`

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "`", "\\`", `$`, `\$`)
	return "`" + r.Replace(s) + "`"
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
