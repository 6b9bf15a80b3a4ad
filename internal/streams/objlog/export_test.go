package objlog

// SetRewriteHook sets the hook called at each stage of an object rewrite,
// and returns a func that unsets it.
func SetRewriteHook(f func(stage string) error) func() {
	rewriteHook = f
	return func() { rewriteHook = nil }
}

// SetReencGroupBytes bounds the bytes a re-encryption rewrites into one
// object, and returns a func that restores the default.
func SetReencGroupBytes(n int64) func() {
	reencGroupBytes = n
	return func() { reencGroupBytes = compactTarget }
}
