# kconfig-fragment FRAGMENT RESOLVE...: merge a Kconfig fragment into ./.config
# and resolve it, the same way for every tool that has Kconfig (Linux, BusyBox).
# 1. Merge: each option line of FRAGMENT (CONFIG_X=y, CONFIG_X=m,
#    CONFIG_X="str", CONFIG_X=123, "# CONFIG_X is not set") replaces that
#    option's line in .config, or is added; any other line must be a comment
#    or blank.
# 2. Resolve: the command RESOLVE (`make olddefconfig` for Linux; `make
#    oldconfig` for BusyBox, whose Kconfig has no olddefconfig) runs with every
#    question answered by its default (`yes ''` on its standard input).
# 3. Check: every option of FRAGMENT holds in the resolved .config (Kconfig
#    drops an option silently when a dependency is missing); if not, fail
#    naming the option, the value wanted and the value found.
# Shipped into every container stage as /build/engine/kconfig-fragment (POSIX sh).
set -eu
fragment=$1
shift
config=.config
[ -s "$config" ] || { echo "kconfig-fragment: no $config in $(pwd): make the base config first"; exit 1; }
option='^(CONFIG_[A-Za-z0-9_]+=.*|# CONFIG_[A-Za-z0-9_]+ is not set)$'
other=$(grep -nvE "$option|^#|^[[:space:]]*$" "$fragment" || true)
[ -z "$other" ] || { echo "kconfig-fragment: $fragment: not an option, a comment or blank: $other"; exit 1; }

# 1. Every line of .config that names an option of the fragment goes; the
#    fragment's option lines follow, in its order.
awk -v fragment="$fragment" '
    function name(line) {
        if (match(line, /^CONFIG_[A-Za-z0-9_]+=/)) return substr(line, 1, RLENGTH - 1)
        if (line ~ /^# CONFIG_[A-Za-z0-9_]+ is not set$/) { split(line, w, " "); return w[2] }
        return ""
    }
    BEGIN { while ((getline line < fragment) > 0) if ((n = name(line)) != "") { wanted[n] = 1; lines[++count] = line } }
    !(name($0) in wanted) { print }
    END { for (i = 1; i <= count; i++) print lines[i] }
' "$config" > "$config.merged"
mv "$config.merged" "$config"

# 2.
yes '' | "$@" >/dev/null

# 3.
grep -E "$option" "$fragment" | while IFS= read -r line; do
    case "$line" in
        "# "*) opt=${line#\# }; opt=${opt% is not set}; want="not set" ;;
        *)     opt=${line%%=*}; want=${line#*=} ;;
    esac
    [ "$want" != n ] || want="not set"
    found=$(grep -E "^$opt=" "$config" || true)
    if [ -n "$found" ]; then have=${found#*=}; else have="not set"; fi
    [ "$have" = "$want" ] || {
        echo "kconfig-fragment: $opt: $fragment wants $want, the resolved $config has $have"; exit 1; }
done
echo "kconfig-fragment: every option of $fragment holds"
