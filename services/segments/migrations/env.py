from services.kit.migrations import run_env

run_env()
