#!/usr/bin/env bash
# End-to-end test of the container image and deploy/docker-compose.yml
# against the real Docker engine: a three-node cluster, every read and write
# mode through every node, a killed node (failover, restart, catch-up) and a
# primary cut off from the network (strong writes fail with Unavailable
# within the bound, a fast write is still acknowledged and survives).
#
#   scripts/e2e-docker.sh        # make e2e-docker
#
# Environment: SKIP_BUILD=1 reuses $RINGKV_IMAGE (default ringkv:dev) instead
# of running scripts/build-image.sh; E2E_TIME_LIMIT (seconds, default 480: building the image takes minutes on a busy 2-core machine)
# bounds the run, after which it is stopped and cleans up (at most 90s more).
#
# Skips (exit 0, saying why) when no Docker engine or compose tool answers.
# Uses a compose project of its own, with its own network and volumes, and
# removes it on every exit. Prints "e2e-docker: N passed, M failed" last;
# exits 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${E2E_BOUNDED:-} ]]; then
	E2E_BOUNDED=1 exec timeout --kill-after=90 "${E2E_TIME_LIMIT:-480}" "$0" "$@"
fi

if ! timeout 20 docker info >/dev/null 2>&1; then
	echo "e2e-docker: SKIP: no Docker engine answers (docker info failed)"
	exit 0
fi
if timeout 20 docker compose version >/dev/null 2>&1; then
	compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
	compose_cmd=(docker-compose)
else
	echo "e2e-docker: SKIP: neither 'docker compose' nor 'docker-compose' is installed"
	exit 0
fi
command -v python3 >/dev/null || { echo "e2e-docker: FAIL: python3 (to read kvctl's JSON) not found"; exit 1; }

start=$SECONDS
project="ringkv-e2e-$$-${RANDOM}"
export RINGKV_IMAGE=${RINGKV_IMAGE:-ringkv:dev}
export RINGKV_CLIENT_PORT=       # a free host port: never collide with a local cluster
export RINGKV_RAFT_TIMEOUT=1s RINGKV_LEADER_LEASE=1s # leader lease: room to act on a cut-off primary
net="${project}_ringkv"
passed=0
failed=0

compose() { timeout 120 "${compose_cmd[@]}" -p "$project" -f deploy/docker-compose.yml "$@"; }
log() { printf 'e2e-docker: [%3ds] %s\n' $((SECONDS - start)) "$*"; }
pass() { passed=$((passed + 1)); log "ok   $*"; }
fail() {
	failed=$((failed + 1))
	log "FAIL $*"
	return 1
}

finish() {
	trap - EXIT INT TERM
	if ((failed > 0)); then
		compose logs --no-color --tail 40 >&2 2>&1
	fi
	timeout 60 "${compose_cmd[@]}" -p "$project" -f deploy/docker-compose.yml down -v --remove-orphans -t 5 >/dev/null 2>&1 ||
		log "compose down failed"
	echo "e2e-docker: $passed passed, $failed failed ($((SECONDS - start))s)"
	((failed == 0 && passed > 0))
	exit $?
}
trap finish EXIT
trap 'fail "interrupted or over the time limit"; exit 1' INT TERM

declare -A cid
# kv NODE ARGS...: kvctl inside NODE's container, against that node. Sets
# out, err and code; never fails the script.
kv() {
	local node=$1
	shift
	local f
	f=$(mktemp)
	out=$(timeout 30 docker exec "${cid[$node]}" /kvctl --addr 127.0.0.1:7001 --timeout 10s "$@" 2>"$f")
	code=$?
	err=$(<"$f")
	rm -f "$f"
}

# expect NAME CODE NODE ARGS...: kvctl must exit CODE.
expect() {
	local name=$1 want=$2
	shift 2
	kv "$@"
	if ((code == want)); then
		pass "$name"
	else
		fail "$name: exit $code, want $want; stdout: $out; stderr: $err"
	fi
}

# expect_value NAME VALUE NODE ARGS...: kvctl get must print VALUE.
expect_value() {
	local name=$1 want=$2
	shift 2
	kv "$@"
	if ((code == 0)) && [[ $out == "$want" ]]; then
		pass "$name"
	else
		fail "$name: exit $code, stdout '$out', want '$want'; stderr: $err"
	fi
}

# cluster NODE CHECK [ARG]: asks NODE for kvctl status --json and checks it
# with one of the python predicates below; prints why it does not hold.
cluster() {
	kv "$1" status --json
	((code == 0)) || { echo "status through $1: exit $code: $err"; return 1; }
	python3 -c '
import json, sys
check, arg = sys.argv[1], sys.argv[2]
st = json.loads(sys.stdin.read())
def why():
    parts = st["partitions"]
    if check == "converged":
        down = [n["id"] for n in st["nodes"] if n.get("error")]
        if down:
            return "unreachable: %s" % down
        for p in parts:
            if not p["primary"]:
                return "partition %d has no primary" % p["partition"]
            applied = {r["node"]: r["applied_index"] for r in p["replicas"]}
            if len(set(applied.values())) != 1:
                return "partition %d applied indexes differ: %s" % (p["partition"], applied)
    elif check == "primaries-without":
        for p in parts:
            if p["primary"] in ("", arg):
                return "partition %d primary is %r" % (p["partition"], p["primary"] or None)
    elif check == "applied":
        print(" ".join("%d=%s:%d" % (p["partition"], p["primary"],
              max(r["applied_index"] for r in p["replicas"])) for p in parts))
    return None
w = why()
if w:
    print(w)
    sys.exit(1)
' "$2" "${3:-}" <<<"$out"
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds or time is up.
wait_for() {
	local name=$1 limit=$2 t0=$SECONDS last
	shift 2
	while true; do
		if last=$("$@" 2>&1); then
			pass "$name ($((SECONDS - t0))s)"
			return 0
		fi
		if ((SECONDS - t0 >= limit)); then
			fail "$name: not within ${limit}s: $last"
			return 1
		fi
		sleep 1
	done
}

healthy() {
	local n s
	for n in "$@"; do
		s=$(docker inspect -f '{{.State.Health.Status}}' "${cid[$n]}") || return 1
		[[ $s == healthy ]] || { echo "$n is $s"; return 1; }
	done
}

# partition_of NODE KEY: writes KEY strong through NODE on an idle cluster and
# prints "PARTITION PRIMARY" of the one partition whose applied index moved.
# Another partition may move meanwhile (a restarted node's primaries handed
# back to it commit a term marker each): then it writes again, up to 5
# times, a second apart.
partition_of() {
	local before after attempt why
	for attempt in 1 2 3 4 5; do
		before=$(cluster "$1" applied) || return 1
		kv "$1" put "$2" "probe-$attempt"
		((code == 0)) || { echo "put $2: exit $code: $err"; return 1; }
		after=$(cluster "$1" applied) || return 1
		if why=$(python3 -c '
import sys
b = dict(x.split("=", 1) for x in sys.argv[1].split())
a = dict(x.split("=", 1) for x in sys.argv[2].split())
moved = [(p, a[p].split(":")[0]) for p in a if a[p] != b.get(p)]
if len(moved) != 1:
    print("want one partition to move, got %s" % moved)
    sys.exit(1)
print(*moved[0])
' "$before" "$after"); then
			echo "$why"
			return 0
		fi
		sleep 1
	done
	echo "$why"
	return 1
}

# --- image and cluster -------------------------------------------------------
if [[ ${SKIP_BUILD:-} != 1 ]]; then
	log "building $RINGKV_IMAGE"
	if timeout 300 scripts/build-image.sh "$RINGKV_IMAGE" >/dev/null; then pass "image builds"; else fail "image build"; exit 1; fi
fi
user=$(docker image inspect -f '{{.Config.User}}' "$RINGKV_IMAGE")
[[ $user == 65532:65532 ]] && pass "image runs as 65532:65532" || fail "image user is '$user'"
revision=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$RINGKV_IMAGE")
if [[ ${SKIP_BUILD:-} == 1 || $revision == "$(git rev-parse HEAD 2>/dev/null || echo unknown)" ]]; then
	pass "image labelled with revision $revision"
else
	fail "image revision label '$revision', want HEAD"
fi

log "starting project $project"
compose up -d >/dev/null 2>&1 || { fail "compose up"; exit 1; }
for n in n1 n2 n3; do
	cid[$n]=$(compose ps -q "$n")
	[[ -n ${cid[$n]} ]] || { fail "no container for $n"; exit 1; }
done
wait_for "three nodes healthy" 90 healthy n1 n2 n3 || exit 1
wait_for "every partition has a primary, replicas equal" 60 cluster n1 converged || exit 1

published=$(docker port "${cid[n1]}" 7001/tcp | head -1)
if [[ $published == 127.0.0.1:* ]] && timeout 5 bash -c "exec 3<>/dev/tcp/${published%:*}/${published##*:}"; then
	pass "n1's client port published on $published only"
else
	fail "n1's client port published as '$published'"
fi
if [[ -z $(docker port "${cid[n2]}") && -z $(docker port "${cid[n3]}") ]]; then
	pass "n2 and n3 publish no port"
else
	fail "n2 or n3 publishes a port"
fi

# --- every mode through every node -------------------------------------------
for n in n1 n2 n3; do
	expect "put strong via $n" 0 "$n" put "key-$n" "v-$n" -c strong
	for m in n1 n2 n3; do
		expect_value "get local via $m of $n's strong write" "v-$n" "$m" get "key-$n" -c local
	done
	expect_value "get quorum via $n" "v-$n" "$n" get "key-$n" -c quorum
	expect "put fast via $n" 0 "$n" put "fast-$n" "f-$n" -c fast
	wait_for "fast write via $n visible to quorum reads" 10 expect_value "quorum read of fast-$n" "f-$n" "$n" get "fast-$n" -c quorum
	expect "del strong via $n" 0 "$n" del "key-$n" -c strong
	expect "get of deleted key via $n is not found" 1 "$n" get "key-$n" -c quorum
	expect "del fast via $n" 0 "$n" del "fast-$n" -c fast
done

# --- a killed node -----------------------------------------------------------
log "docker kill n3"
docker kill "${cid[n3]}" >/dev/null && pass "n3 killed" || fail "docker kill n3"
wait_for "n1 and n2 elect primaries for n3's partitions" 60 cluster n1 primaries-without n3
for i in 1 2 3 4 5 6; do
	n=n$((i % 2 + 1))
	expect "strong write $i with n3 down, via $n" 0 "$n" put "down-$i" "d-$i" -c strong
done
expect_value "quorum read with n3 down" "d-5" n1 get down-5 -c quorum
log "docker start n3"
docker start "${cid[n3]}" >/dev/null && pass "n3 restarted" || fail "docker start n3"
wait_for "n3 healthy again" 60 healthy n3
wait_for "n3 caught up: applied indexes equal" 90 cluster n1 converged
expect_value "n3 serves a write made while it was down" "d-6" n3 get down-6 -c quorum

# --- a primary cut off from the network --------------------------------------
if pp=$(partition_of n1 cut-key); then
	read -r part x <<<"$pp"
	pass "cut-key is in partition $part, primary $x"
	y=n1
	[[ $x == n1 ]] && y=n2
	log "docker network disconnect $x"
	docker network disconnect "$net" "${cid[$x]}" && pass "$x disconnected" || fail "network disconnect $x"
	expect "fast write through cut-off primary $x is acknowledged" 0 "$x" put cut-key fast-while-cut -c fast
	t0=$SECONDS
	kv "$x" put cut-key strong-while-cut -c strong
	took=$((SECONDS - t0))
	if ((code == 3)) && [[ $err == *Unavailable* ]] && ((took <= 10)); then
		pass "strong write through cut-off $x fails Unavailable in ${took}s: $err"
	else
		fail "strong write through cut-off $x: exit $code after ${took}s, want 3 and Unavailable; stderr: $err"
	fi
	wait_for "majority elects a new primary for partition $part" 60 cluster "$y" primaries-without "$x"
	expect "strong write on the majority side via $y" 0 "$y" put majority-key m -c strong
	log "docker network connect $x"
	docker network connect --alias "$x" "$net" "${cid[$x]}" && pass "$x reconnected" || fail "network connect $x"
	wait_for "cluster converges after the partition" 90 cluster "$y" converged
	for n in n1 n2 n3; do
		wait_for "acknowledged fast write survived, read via $n" 30 \
			expect_value "cut-key via $n" fast-while-cut "$n" get cut-key -c quorum
	done
	expect_value "majority-side write readable via $x" m "$x" get majority-key -c quorum
else
	fail "finding cut-key's partition: $pp"
fi
