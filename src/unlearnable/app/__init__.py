"""The application: the command line, the experiment protocols, the audit, the report and the
data owner's folder workflow. Built on the library (data, attacks, defenses, models, training,
analysis); only this layer prints to the terminal."""
