"""``vdsm-client``: the command line of the API, driven by the schema.

``main`` parses the words (:mod:`.resolve`: namespaces, verbs, aliases, did-you-mean), turns
``name=value`` into typed params (:mod:`.values`: strings stay strings, sizes take units,
enums are checked here), resolves VM names (:mod:`.names`), calls the verb, prints the
result (:mod:`.output`: json, table or yaml) and exits with a code that says what happened
(:mod:`.exitcodes`). ``--wait`` follows a task to its end (:mod:`.wait`); ``VM list`` is a
table of the VMs (:mod:`.vmlist`); ``completion bash`` prints a bash completion script
(:mod:`.completion`).
"""
