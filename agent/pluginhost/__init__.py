"""The plugin host: loading plugins one at a time (load), the guard around every provider they
return (guard), and the plugin manager with its typed facade, the only caller of pm.hook (manager).
"""
