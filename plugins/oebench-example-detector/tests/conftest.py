# oebench's plugin kit: the `oebench_plugin` fixture and the contract checks
pytest_plugins = ["oebench.testing"]
