# The release policy of the delivery example (`[policy]` in orch.toml).
#
# Phases tagged `release` (pushing the images, tagging the release) start only from the
# branch `main` or a `release/*` branch of the repository the pipeline is in, and never
# when the var `skip_tests` is set. Every other phase may start.
#
# Try it: `orch policy eval examples/delivery/orch.toml --phase tag --var skip_tests=1`.
package orch

default allow := false

release if "release" in input.phase.tags

release_branch if input.git.branch == "main"

release_branch if startswith(input.git.branch, "release/")

allow if not release

allow if {
	release
	release_branch
}

deny contains msg if {
	release
	input.git
	not release_branch
	msg := sprintf("%s: releases start only from main or release/*, not from %s", [input.phase.id, input.git.branch])
}

deny contains msg if {
	release
	not input.git
	msg := sprintf("%s: releases start only from a git repository (main or release/*)", [input.phase.id])
}

deny contains msg if {
	release
	input.run.vars.skip_tests != ""
	msg := sprintf("%s: releases never skip tests (skip_tests = %q)", [input.phase.id, input.run.vars.skip_tests])
}
