package vhdx

// SetCompactStep makes Compact call f before each step of a rewrite (nil:
// no hook); for tests that interrupt it.
func SetCompactStep(f func(step string) error) { compactStep = f }
