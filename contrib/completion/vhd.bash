# bash completion for vhd(1)                                    -*- shell-script -*-

_vhd()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            info|create|convert|check|resize|compact|commit|relink) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W 'info create convert check resize compact commit relink --help --version' -- "$cur"))
        return
    fi
    case $prev in
        -t) COMPREPLY=($(compgen -W 'fixed dynamic' -- "$cur")); return ;;
        -O) COMPREPLY=($(compgen -W 'raw fixed dynamic vhdx vhdx-fixed' -- "$cur")); return ;;
        --format) COMPREPLY=($(compgen -W 'vhd vhdx' -- "$cur")); return ;;
        --sector-size) COMPREPLY=($(compgen -W '512 4096' -- "$cur")); return ;;
        -f) COMPREPLY=($(compgen -W 'vhd raw' -- "$cur")); return ;;
        --block-size) COMPREPLY=($(compgen -W '512 4K 64K 512K 1M 2M 16M 256M' -- "$cur")); return ;;
        --parent) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        local opts
        case $cmd in
            info) opts='--json --parent --help' ;;
            check) opts='--json --parent --azure --help' ;;
            create) opts='--format -t --block-size --sector-size --parent --azure --help' ;;
            convert) opts='-O -f --block-size --sector-size --parent --azure --force --sync --help' ;;
            resize) opts='--shrink --parent --help' ;;
            compact) opts='--parent --help' ;;
            commit) opts='--remove --force --help' ;;
            relink) opts='--parent --help' ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$cur"))
}
complete -F _vhd vhd
