"""The reproduction behind `bench/reproduce.py`: the task (`task`), the runs (`runs`), their analysis (`analysis`) and
the page (`report`, whose prose lives in `template.md`). Imports only `tspin_trl` and libraries."""
