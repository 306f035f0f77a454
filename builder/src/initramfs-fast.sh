
# --- nib: appended to a build-time copy of initramfs-tools' hook-functions
# (bind-mounted over it while nib runs update-initramfs; never in the image).
# mkinitramfs with MODULES=most calls copy_file for each of ~2,500 module
# paths, and the stock copy_file forks realpath and readlink twice each to
# canonicalise them: ~13,000 processes, ~15 of its ~19 s here. Below, the
# same canonicalisation for the plain case (absolute paths without . or ..,
# no symlink on the source's path) done with shell built-ins; anything else
# goes to the stock function, kept above as nib_stock_copy_file. nib uses
# this only when the stock copy_file is the one it was written against, and
# the image test checks that the initramfs equals a stock mkinitramfs run's.

nib_bin_target="$(readlink -f /bin)"

copy_file() {
	local src target t p
	src="${2}"
	target="${3:-$2}"
	case "${src}" in
	/*) ;;
	*) nib_stock_copy_file "$@"; return ;;
	esac
	[ -f "${src}" ] || return 2
	if [ -d "${DESTDIR}/${target}" ] || [ "${target%/}" != "$target" ]; then
		target="${target}/${src##*/}"
	fi
	# realpath -ms, for paths without . and .. components: squeeze slashes
	case "/${target}/" in
	*/./* | */../*) nib_stock_copy_file "$@"; return ;;
	esac
	case "${src}/" in
	*/./* | */../* | *//*) nib_stock_copy_file "$@"; return ;;
	esac
	t="/${target}"
	while :; do
		case "${t}" in
		*//*) t="${t%%//*}/${t#*//}" ;;
		*) break ;;
		esac
	done
	[ "${t}" = / ] || t="${t%/}"
	# usr-merged directories, as the stock function canonicalises them
	case "${src}" in
	/bin/* | /lib* | /sbin/*)
		[ "${nib_bin_target}" = /usr/bin ] && src="/usr${src}"
		;;
	esac
	case "${t}" in
	/bin/* | /lib* | /sbin/*) t="/usr${t}" ;;
	esac
	[ -e "${DESTDIR}/${t}" ] && return 1
	# readlink -f "$src" = realpath -s "$src" when no component is a link
	p="${src}"
	while [ -n "${p}" ]; do
		if [ -L "${p}" ]; then
			nib_stock_copy_file "$@"
			return
		fi
		p="${p%/*}"
	done
	[ -d "${DESTDIR}/${t%/*}" ] || mkdir -p "${DESTDIR}/${t%/*}"
	[ "${verbose}" = "y" ] && echo "Adding ${1} ${src}"
	cp -pP "${src}" "${DESTDIR}/${t}" || return $(($? + 1))
}

# manual_add_modules asks modinfo for each module's firmware (~750 more
# processes) and copies what it finds under /lib/firmware. A root without
# /lib/firmware has none to copy: the answer cannot change the initramfs.
if [ ! -e /lib/firmware ]; then
	modinfo() {
		if [ "$#" = 5 ] && [ "$1" = -k ] && [ "$3" = -F ] && [ "$4" = firmware ]; then
			return 0
		fi
		command modinfo "$@"
	}
fi
