# Summit guard: may this principal do this action on this resource?
#
# Every privileged action (pause, rollback, freeze, resume, ramp_up, override, backup,
# restore, dr_drill, export_release) asks `data.summit.guard.decision` first. The answer is
# always defined and always an object {"allow", "reason", "cacheable"}:
#   - allow: least privilege, so anything not explicitly granted is denied;
#   - reason: names the role/action or the failed override requirement, because the reason
#     ends up in a signed receipt and is what an on-call human reads at 3 a.m.;
#   - cacheable: true only when the answer depended on nothing but the principal's roles,
#     the action and the resource kind. The caller caches on exactly those (plus the
#     principal id and the policy version), so a decision that read the rationale, the TTL
#     or the params must say false or a cached allow would leak to a request that fails them.
#
# Role -> action grants live in data.json (data.summit.grants), not here: granting or revoking
# an action is a reviewed data change that cannot break the rules, and the same rules serve
# any deployment's grant table. What stays in code is what grants cannot express: the extra
# requirements on an override.
package summit.guard

import rego.v1

# Override requirements. A human override bypasses automation, so it must say why (a real
# sentence, not "fix" padded with spaces) and must expire on its own (at most one day).
override_min_rationale_chars := 20

override_max_ttl_seconds := 86400

# The only action whose answer reads more than roles/action/kind.
override_action := "override"

grants := object.get(data, ["summit", "grants"], {})

principal := object.get(input, "principal", {})

principal_id := object.get(principal, "id", "")

action := object.get(input, "action", "")

# Only string roles count: a malformed role list must not grant anything.
roles := {r | some r in object.get(principal, "roles", []); is_string(r)}

# Roles of this principal whose grant list contains the action.
granting_roles contains r if {
	some r in roles
	action in object.get(grants, r, [])
}

# Every role in the grant table that would allow the action: named in denials so the
# requester learns whom to ask instead of guessing.
roles_granted_action contains r if {
	some r, actions in grants
	action in actions
}

# Non-blank characters: whitespace, separators, control and format characters (zero-width
# spaces, word joiners), marks (combining accents, variation selectors, the combining grapheme
# joiner: none is seen alone, and an accented or Devanagari letter counts once, as a reader sees
# it) and the blank "letters" and symbols (Hangul fillers, the braille blank, the Khmer
# inherent vowels, the musical null notehead) do not count towards the rationale length:
# twenty invisible characters are no reason.
rationale := r if {
	r := input.rationale
	is_string(r)
} else := ""

rationale_chars := count(regex.replace(rationale, `[\s\p{Z}\p{C}\p{M}\x{115F}\x{1160}\x{3164}\x{FFA0}\x{2800}\x{17B4}\x{17B5}\x{1D159}]`, ""))

ttl := object.get(input, "ttl_seconds", null)

ttl_ok if {
	is_number(ttl)
	floor(ttl) == ttl # whole seconds
	ttl > 0
	ttl <= override_max_ttl_seconds
}

override_failures contains msg if {
	rationale_chars < override_min_rationale_chars
	msg := sprintf(
		"override requires a rationale of at least %d non-blank characters (got %d)",
		[override_min_rationale_chars, rationale_chars],
	)
}

override_failures contains msg if {
	not ttl_ok
	msg := sprintf(
		"override requires ttl_seconds in (0, %d] (got %v)",
		[override_max_ttl_seconds, ttl],
	)
}

# The other actions whose rationale a person writes (the receipt keeps it as the reason): a
# discarded action or a retired signing key needs as real a reason as an override.
worded_actions := {"dlq_discard", "key_rotate"}

worded_failures contains msg if {
	action in worded_actions
	rationale_chars < override_min_rationale_chars
	msg := sprintf(
		"%s requires a rationale of at least %d non-blank characters (got %d)",
		[action, override_min_rationale_chars, rationale_chars],
	)
}

role_list(s) := concat(", ", sort(s))

# Why a principal with no granting role is denied; depends only on roles and action.
deny_reason := sprintf("denied: principal %q has no roles", [principal_id]) if {
	count(roles) == 0
} else := sprintf(
	"denied: role(s) %s may not %s (no role is granted %s)",
	[role_list(roles), action, action],
) if {
	count(roles_granted_action) == 0
} else := sprintf(
	"denied: role(s) %s may not %s (granted to: %s)",
	[role_list(roles), action, role_list(roles_granted_action)],
)

allow_reason := sprintf("allowed: role(s) %s may %s", [role_list(granting_roles), action])

# Override decisions are never cacheable, allowed or not: caching them would key a
# rationale/TTL-dependent answer on roles alone.
decision := {"allow": false, "reason": deny_reason, "cacheable": false} if {
	action == override_action
	count(granting_roles) == 0
} else := {
	"allow": false,
	"reason": sprintf("denied: %s", [concat("; ", sort(override_failures))]),
	"cacheable": false,
} if {
	action == override_action
	count(override_failures) > 0
} else := {"allow": true, "reason": allow_reason, "cacheable": false} if {
	action == override_action
} else := {
	"allow": false,
	"reason": sprintf("denied: %s", [concat("; ", sort(worded_failures))]),
	"cacheable": false,
} if {
	count(granting_roles) > 0
	count(worded_failures) > 0
} else := {"allow": true, "reason": allow_reason, "cacheable": false} if {
	count(granting_roles) > 0
	action in worded_actions
} else := {"allow": true, "reason": allow_reason, "cacheable": true} if {
	count(granting_roles) > 0
} else := {"allow": false, "reason": deny_reason, "cacheable": true}
