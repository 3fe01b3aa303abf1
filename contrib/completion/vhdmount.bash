# bash completion for vhdmount(8)                               -*- shell-script -*-

_vhdmount()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --parent) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -o)
            local done=${cur%"${cur##*,}"}
            COMPREPLY=($(compgen -P "$done" -W 'ro allow_other debug parent= ignore_checksums no_partitions nofail defaults' -- "${cur##*,}"))
            compopt -o nospace 2>/dev/null
            return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W '--ro --allow-other -f --foreground -d --debug --parent --ignore-checksums --no-partitions -o --help' -- "$cur"))
        return
    fi
    # IMAGE, then MOUNTPOINT (a directory).
    local i n=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --parent|-o) ((i++)) ;;
            -*) ;;
            *) ((n++)) ;;
        esac
    done
    compopt -o filenames 2>/dev/null
    if ((n == 0)); then
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=($(compgen -d -- "$cur"))
    fi
}
complete -F _vhdmount vhdmount
