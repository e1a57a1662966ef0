from runtime.database import run_migrations_in_env

run_migrations_in_env()
