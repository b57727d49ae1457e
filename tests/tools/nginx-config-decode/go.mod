module nginxconfigdecode

go 1.25

require github.com/mitchellh/mapstructure v1.5.0
